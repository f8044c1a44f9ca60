"""Paged KV block accounting for one instance.

Requests are named by non-negative integer ids (the simulator's request index; the
engine maps its own ids to these). Per-request holdings live in one numpy array so a
decode step's growth for thousands of sequences is a single vectorised call.
Allocation is all-or-nothing and never overcommits: a request that does not fit
returns False and changes nothing.
"""

from __future__ import annotations

import numpy as np

from cloudmatrix.errors import CloudMatrixError


class KVBlockManager:
    """`total_blocks` KV blocks of `block_size` tokens each."""

    __slots__ = ("total_blocks", "block_size", "_held", "_used")

    def __init__(self, total_blocks: int, block_size: int, *, expected_requests: int = 1024) -> None:
        if total_blocks < 0:
            raise CloudMatrixError(f"KV cache must have >= 0 blocks, got {total_blocks}; check the memory left for KV.")
        if block_size < 1:
            raise CloudMatrixError(f"KV block_size must be >= 1 token, got {block_size}.")
        self.total_blocks = int(total_blocks)
        self.block_size = int(block_size)
        self._held = np.zeros(max(int(expected_requests), 1), dtype=np.int64)
        self._used = 0

    # ---- sizes ---------------------------------------------------------------------------
    def blocks_for(self, tokens: int | np.ndarray) -> int | np.ndarray:
        """Blocks needed to hold `tokens` tokens (ceil division); vectorised over arrays."""
        if isinstance(tokens, np.ndarray):
            t = tokens.astype(np.int64, copy=False)
            if t.size and t.min() < 0:
                raise CloudMatrixError("token counts must be >= 0; a negative length is a caller bug.")
            return -(-t // self.block_size)
        if tokens < 0:
            raise CloudMatrixError(f"token count must be >= 0, got {tokens}.")
        return -(-int(tokens) // self.block_size)

    @property
    def num_used(self) -> int:
        return self._used

    @property
    def num_free(self) -> int:
        return self.total_blocks - self._used

    @property
    def occupancy(self) -> float:
        """Used / total blocks (0.0 for an empty cache of size 0)."""
        return self._used / self.total_blocks if self.total_blocks else 0.0

    def held(self, request_ids: int | np.ndarray) -> int | np.ndarray:
        """Blocks currently held by each request (0 for unknown ids)."""
        if isinstance(request_ids, np.ndarray):
            ids = self._check_ids(request_ids)
            out = np.zeros(ids.shape, dtype=np.int64)
            known = ids < self._held.size
            out[known] = self._held[ids[known]]
            return out
        rid = self._check_id(request_ids)
        return int(self._held[rid]) if rid < self._held.size else 0

    def can_fit(self, tokens: int) -> bool:
        """Whether a new request of `tokens` tokens fits now."""
        return self.blocks_for(tokens) <= self.num_free

    def extra_blocks(self, request_ids: np.ndarray, tokens: np.ndarray) -> int:
        """New blocks needed for each request to hold its `tokens` (total, not added) tokens."""
        ids = self._check_ids(request_ids)
        need = self.blocks_for(np.asarray(tokens)) - self.held(ids)
        return int(np.maximum(need, 0).sum())

    # ---- allocation ----------------------------------------------------------------------
    def allocate(self, request_id: int, tokens: int) -> bool:
        """Grow request `request_id` to hold `tokens` tokens in total; False if out of blocks."""
        rid = self._check_id(request_id)
        self._ensure_size(rid + 1)
        need = self.blocks_for(tokens) - int(self._held[rid])
        if need <= 0:
            return True
        if need > self.num_free:
            return False
        self._held[rid] += need
        self._used += need
        return True

    def allocate_many(self, request_ids: np.ndarray, tokens: np.ndarray) -> bool:
        """All-or-nothing `allocate` for distinct `request_ids` with totals `tokens`.

        Typical use: one decode step, `tokens` = each live sequence's new length.
        Ids must be distinct (not checked: a sort per step would dominate the cost).
        """
        ids = self._check_ids(request_ids)
        tok = np.asarray(tokens)
        if tok.shape != ids.shape:
            raise CloudMatrixError(
                f"request_ids and tokens differ in shape: {ids.shape} vs {tok.shape}; pass one length per id."
            )
        if ids.size == 0:
            return True
        self._ensure_size(int(ids.max()) + 1)
        want = self.blocks_for(tok)
        need = np.maximum(want - self._held[ids], 0)
        total = int(need.sum())
        if total > self.num_free:
            return False
        self._held[ids] += need
        self._used += total
        return True

    def free(self, request_id: int) -> int:
        """Release all blocks of a request; returns how many were freed."""
        rid = self._check_id(request_id)
        if rid >= self._held.size:
            return 0
        n = int(self._held[rid])
        self._held[rid] = 0
        self._used -= n
        return n

    def free_many(self, request_ids: np.ndarray) -> int:
        """Release all blocks of each request (duplicates are harmless); returns blocks freed."""
        ids = self._check_ids(request_ids)
        ids = ids[ids < self._held.size]
        if ids.size == 0:
            return 0
        ids = np.unique(ids)  # so a duplicated id is not counted twice
        freed = int(self._held[ids].sum())
        self._held[ids] = 0
        self._used -= freed
        return freed

    def reset(self) -> None:
        """Free everything."""
        self._held[:] = 0
        self._used = 0

    # ---- internals -----------------------------------------------------------------------
    def _ensure_size(self, n: int) -> None:
        if n > self._held.size:
            grown = np.zeros(max(n, 2 * self._held.size), dtype=np.int64)
            grown[: self._held.size] = self._held
            self._held = grown

    @staticmethod
    def _check_id(request_id: int) -> int:
        rid = int(request_id)
        if rid < 0:
            raise CloudMatrixError(f"request ids must be >= 0, got {rid}.")
        return rid

    @staticmethod
    def _check_ids(request_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(request_ids, dtype=np.int64)
        if ids.size and ids.min() < 0:
            raise CloudMatrixError("request ids must be >= 0; got a negative id.")
        return ids
