"""The request table: one row per request, as parallel numpy arrays (index = request id)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.sim.workload import prefixes


@dataclass(eq=False)
class RequestTable:
    """Requests as parallel arrays.

    arrival_time [s], float64, NaN for closed-loop; input_len, output_len [tokens];
    prefix_group (-1 = none); prefix_len [tokens] of the prompt shared with the group
    (0 when none). `concurrency` is the client count of a closed-loop workload: the runtime
    issues each next request when a client's previous one finishes.
    """

    arrival_time: np.ndarray
    input_len: np.ndarray
    output_len: np.ndarray
    prefix_group: np.ndarray
    prefix_len: np.ndarray
    concurrency: int | None = None

    def __post_init__(self) -> None:
        self.arrival_time = np.asarray(self.arrival_time, dtype=np.float64)
        for name in ("input_len", "output_len", "prefix_group", "prefix_len"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        n = self.arrival_time.size
        for name in ("input_len", "output_len", "prefix_group", "prefix_len"):
            if getattr(self, name).shape != (n,):
                raise CloudMatrixError(f"workload column {name} has {getattr(self, name).size} rows, not {n}.")
        if n and (self.input_len.min() < 1 or self.output_len.min() < 1):
            raise CloudMatrixError("every request needs input_len >= 1 and output_len >= 1 tokens.")
        grouped = self.prefix_group >= 0
        if n and (self.prefix_group.min() < -1 or (self.prefix_len[~grouped] != 0).any()):
            raise CloudMatrixError("prefix_group must be >= -1 and requests without a group need prefix_len 0.")
        if (self.prefix_len < 0).any() or (self.prefix_len > self.input_len).any():
            raise CloudMatrixError("prefix_len must lie in [0, input_len] for every request.")
        if self.concurrency is None:
            if np.isnan(self.arrival_time).any():
                raise CloudMatrixError("open-loop workloads need an arrival time for every request.")
            if n and (np.diff(self.arrival_time) < 0).any():
                raise CloudMatrixError("arrival times must be non-decreasing; sort the requests by arrival.")
        elif self.concurrency < 1:
            raise CloudMatrixError(f"closed-loop concurrency must be >= 1, got {self.concurrency}.")

    def __len__(self) -> int:
        return self.arrival_time.size

    @property
    def closed_loop(self) -> bool:
        return self.concurrency is not None

    @property
    def num_groups(self) -> int:
        return int(self.prefix_group.max()) + 1 if len(self) else 0

    def head(self, n: int) -> RequestTable:
        """The first `n` requests."""
        return RequestTable(
            self.arrival_time[:n], self.input_len[:n], self.output_len[:n],
            self.prefix_group[:n], self.prefix_len[:n], self.concurrency,
        )  # fmt: skip

    # ---- KV blocks of the prompts (hashing lives in prefixes.py)
    def prompt_blocks(self, block_size: int) -> np.ndarray:
        """Full KV blocks of each prompt (the cacheable ones)."""
        return self.input_len // prefixes.check_block_size(block_size)

    def shared_blocks(self, block_size: int) -> np.ndarray:
        """Full blocks of each prompt that lie inside its group's shared prefix."""
        return self.prefix_len // prefixes.check_block_size(block_size)

    def block_hashes_for(self, request_index: int, block_size: int) -> np.ndarray:
        """Block hashes of request `request_index`'s full prompt blocks (the whole group shares its prefix's)."""
        i = int(request_index)
        return prefixes.block_hashes(i, self.input_len[i], self.prefix_len[i], self.prefix_group[i], block_size)

    def block_hashes_bulk(self, indices: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
        """`block_hashes_for` for many requests at once: (flat hashes, offsets)."""
        idx = np.asarray(indices, dtype=np.int64)
        return prefixes.block_hashes_bulk(
            idx, self.input_len[idx], self.prefix_len[idx], self.prefix_group[idx], block_size
        )
