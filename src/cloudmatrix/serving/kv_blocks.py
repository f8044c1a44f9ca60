"""Paged KV block accounting for one instance.

Requests are named by non-negative integer ids (the simulator's request index; the
engine maps its own ids to these). Per-request holdings live in one numpy array so a
decode step's growth for thousands of sequences is a single vectorised call.
Allocation is all-or-nothing and never overcommits: a request that does not fit
returns False and changes nothing.

With `block_ids=True` (the engine) the manager also hands out concrete block ids: each
request owns a block table (the rows of the paged KV tensor it writes), blocks carry a
reference count so a prefix-cache hit can share full prompt blocks between requests (and
the prefix cache itself can keep blocks alive after their request ends), and a block goes
back to the free list when its last reference is dropped. The counts above stay exact in
both modes: `held` is the length of a request's table, `num_used` the blocks not free.
"""

from __future__ import annotations

import numpy as np

from cloudmatrix.errors import CloudMatrixError


class KVBlockManager:
    """`total_blocks` KV blocks of `block_size` tokens each."""

    __slots__ = ("total_blocks", "block_size", "_held", "_used", "_free_ids", "_tables", "_refs")

    def __init__(
        self, total_blocks: int, block_size: int, *, expected_requests: int = 1024, block_ids: bool = False
    ) -> None:
        if total_blocks < 0:
            raise CloudMatrixError(f"KV cache must have >= 0 blocks, got {total_blocks}; check the memory left for KV.")
        if block_size < 1:
            raise CloudMatrixError(f"KV block_size must be >= 1 token, got {block_size}.")
        self.total_blocks = int(total_blocks)
        self.block_size = int(block_size)
        self._held = np.zeros(max(int(expected_requests), 1), dtype=np.int64)
        self._used = 0
        # block-id mode only: a stack of free ids (low ids handed out first), tables, reference counts
        self._free_ids: list[int] | None = list(range(self.total_blocks - 1, -1, -1)) if block_ids else None
        self._tables: dict[int, list[int]] = {}
        self._refs = np.zeros(self.total_blocks if block_ids else 0, dtype=np.int64)

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
        # inlined id/size/ceil checks: this runs once per admitted request
        rid = int(request_id)
        if rid < 0:
            self._check_id(rid)
        if rid >= self._held.size:
            self._ensure_size(rid + 1)
        tokens = int(tokens)
        if tokens < 0:
            self.blocks_for(tokens)  # raises the token-count error
        need = -(-tokens // self.block_size) - int(self._held[rid])
        if need <= 0:
            return True
        if need > self.total_blocks - self._used:
            return False
        if self._free_ids is not None:
            self._take(rid, need)
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
        if self._free_ids is not None:
            for rid, n in zip(ids.tolist(), need.tolist(), strict=True):
                self._take(rid, n)
        self._held[ids] += need
        self._used += total
        return True

    def free(self, request_id: int) -> int:
        """Release all blocks of a request; returns how many were freed."""
        rid = self._check_id(request_id)
        if rid >= self._held.size:
            return 0
        if self._free_ids is not None:
            return self._release_table(rid)
        n = int(self._held[rid])
        self._held[rid] = 0
        self._used -= n
        return n

    def free_many(self, request_ids: np.ndarray, *, distinct: bool = False) -> int:
        """Release all blocks of each request (duplicates are harmless); returns blocks freed.

        `distinct=True` says the ids are already distinct (a decode step's finished requests), which
        skips the sort that makes duplicates harmless."""
        if distinct and self._free_ids is None:
            ids = np.asarray(request_ids, dtype=np.int64)  # ids of requests that allocated: valid and in range
            freed = int(self._held[ids].sum())
            self._held[ids] = 0
            self._used -= freed
            return freed
        ids = self._check_ids(request_ids)
        ids = ids[ids < self._held.size]
        if ids.size == 0:
            return 0
        if not distinct:
            ids = np.unique(ids)  # so a duplicated id is not counted twice
        if self._free_ids is not None:
            return sum(self._release_table(rid) for rid in ids.tolist())
        freed = int(self._held[ids].sum())
        self._held[ids] = 0
        self._used -= freed
        return freed

    def reset(self) -> None:
        """Free everything."""
        self._held[:] = 0
        self._used = 0
        if self._free_ids is not None:
            self._free_ids[:] = range(self.total_blocks - 1, -1, -1)
            self._tables.clear()
            self._refs[:] = 0

    # ---- block ids (block_ids=True) -------------------------------------------------------
    def table(self, request_id: int) -> list[int]:
        """The block ids request `request_id` holds, in token order (do not mutate)."""
        return self._tables.get(int(request_id), [])

    def share(self, request_id: int, block_ids: list[int]) -> None:
        """Start an empty request's table with blocks that already hold its first tokens (a prefix hit)."""
        rid = self._check_id(request_id)
        self._require_ids()
        if self.table(rid):
            raise ValueError(f"request {rid} already holds blocks; shared blocks must come first")
        self._ensure_size(rid + 1)
        self._tables[rid] = list(block_ids)
        self.hold(block_ids)
        self._held[rid] = len(block_ids)

    def shrink(self, request_id: int, tokens: int) -> int:
        """Keep only the blocks needed for `tokens` tokens (a rolled-back speculative run); returns freed."""
        rid = self._check_id(request_id)
        self._require_ids()
        table = self._tables.get(rid, [])
        keep = self.blocks_for(tokens)
        if keep >= len(table):
            return 0
        tail = table[keep:]
        del table[keep:]
        self._held[rid] = keep
        return self.release(tail[::-1])

    def hold(self, block_ids: list[int]) -> None:
        """Add a reference to blocks already in use (the prefix cache keeping them)."""
        self._require_ids()
        ids = np.asarray(block_ids, dtype=np.int64)
        if ids.size and self._refs[ids].min() < 1:
            raise ValueError("only blocks in use can gain a reference")
        np.add.at(self._refs, ids, 1)

    def release(self, block_ids: list[int]) -> int:
        """Drop one reference from each block; returns how many went back to the free list."""
        self._require_ids()
        freed = 0
        for b in block_ids:
            self._refs[b] -= 1
            if self._refs[b] == 0:
                self._free_ids.append(b)
                freed += 1
        self._used -= freed
        return freed

    def refs(self, block_id: int) -> int:
        return int(self._refs[block_id])

    def _take(self, rid: int, n: int) -> None:
        if n <= 0:
            return
        table = self._tables.setdefault(rid, [])
        for _ in range(n):
            b = self._free_ids.pop()
            self._refs[b] = 1
            table.append(b)

    def _release_table(self, rid: int) -> int:
        table = self._tables.pop(rid, [])
        self._held[rid] = 0
        # release the tail first so the free stack hands the low ids out again first
        return self.release(table[::-1])

    def _require_ids(self) -> None:
        if self._free_ids is None:
            raise ValueError("block ids need KVBlockManager(..., block_ids=True)")

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
