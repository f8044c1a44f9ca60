"""The caching pool (EMS) as a content-addressed store of KV blocks.

A block is named by a chained hash of its tokens (and every token before it),
so a prompt's cached part is the longest run of leading block hashes found in
the store. Blocks are deduplicated and evicted whole, least recently used first.

The simulator stores hashes only (`lookup`, `insert`). The engine also records where
each block's KV lives (`insert_blocks`, `match`, `evict`): the value is a block id of
its KV pool, and the caller keeps one reference on that block for as long as the cache
names it (see `KVBlockManager.hold` / `release`).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from cloudmatrix.errors import CloudMatrixError

# Hashes stay in [0, 2**63) so they fit an int64 array.
_HASH_MASK = (1 << 63) - 1


def hash_token_blocks(token_ids: Sequence[int] | np.ndarray, block_size: int) -> list[int]:
    """Chained hashes of the full blocks of `token_ids` (a trailing partial block has none).

    Block i's hash covers block i's tokens and the hash of block i-1, so equal hashes
    mean equal prefixes. blake2b keeps the values stable across processes and hosts.
    """
    if block_size < 1:
        raise CloudMatrixError(f"block_size must be >= 1 token, got {block_size}; pass a positive size.")
    tokens = np.ascontiguousarray(token_ids, dtype=np.int64)
    if tokens.ndim != 1:
        raise CloudMatrixError(f"token_ids must be one sequence of ids, got shape {tokens.shape}.")
    n_full = tokens.size // block_size
    hashes: list[int] = []
    prev = b""
    for i in range(n_full):
        h = hashlib.blake2b(prev, digest_size=8)
        h.update(tokens[i * block_size : (i + 1) * block_size].tobytes())
        prev = h.digest()
        hashes.append(int.from_bytes(prev, "little") & _HASH_MASK)
    return hashes


def _as_list(block_hashes: Iterable[int] | np.ndarray) -> list[int]:
    # ndarray.tolist() gives Python ints in one C call; dict lookups on them are fastest.
    if isinstance(block_hashes, np.ndarray):
        return block_hashes.tolist()
    return list(block_hashes)


class PrefixCache:
    """LRU, deduplicating store of `capacity_blocks` KV blocks of `block_size` tokens each.

    Counters are cumulative: `hit_blocks`/`miss_blocks` over `lookup` calls that record,
    `inserted_blocks` (new blocks only), `evicted_blocks`; the `*_tokens` properties
    multiply by the block size.
    """

    __slots__ = (
        "capacity_blocks",
        "block_size",
        "_lru",
        "hit_blocks",
        "miss_blocks",
        "inserted_blocks",
        "evicted_blocks",
        "lookups",
    )

    def __init__(self, capacity_blocks: int, block_size: int) -> None:
        if capacity_blocks < 0:
            raise CloudMatrixError(
                f"caching pool capacity must be >= 0 blocks, got {capacity_blocks}; give the pool a non-negative size."
            )
        if block_size < 1:
            raise CloudMatrixError(f"caching pool block_size must be >= 1 token, got {block_size}.")
        self.capacity_blocks = int(capacity_blocks)
        self.block_size = int(block_size)
        # Ordered oldest -> newest; values: the block id holding the KV (engine) or None (simulator).
        self._lru: OrderedDict[int, int | None] = OrderedDict()
        self.hit_blocks = 0
        self.miss_blocks = 0
        self.inserted_blocks = 0
        self.evicted_blocks = 0
        self.lookups = 0

    # ---- queries -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._lru)

    def __contains__(self, block_hash: int) -> bool:
        return block_hash in self._lru

    @property
    def used_blocks(self) -> int:
        return len(self._lru)

    @property
    def free_blocks(self) -> int:
        return self.capacity_blocks - len(self._lru)

    def lookup(self, block_hashes: Iterable[int] | np.ndarray, *, record: bool = True) -> int:
        """Number of leading blocks present (a prefix match: stops at the first miss).

        Hit blocks become most recently used. With `record`, the hits and the remaining
        blocks (as misses) are added to the counters; `record=False` is a pure probe
        that neither counts nor refreshes.
        """
        hashes = _as_list(block_hashes)
        lru = self._lru
        hit = 0
        for h in hashes:
            if h not in lru:
                break
            hit += 1
        if record:
            # Refresh tail-first so a chain's head ends up newest: the tail is evicted
            # before the head and the surviving part stays a matchable prefix.
            for h in reversed(hashes[:hit]):
                lru.move_to_end(h)
            self.lookups += 1
            self.hit_blocks += hit
            self.miss_blocks += len(hashes) - hit
        return hit

    # ---- updates -------------------------------------------------------------------------
    def insert(self, block_hashes: Iterable[int] | np.ndarray) -> int:
        """Store a chain of blocks (deduplicated); returns how many were new.

        A chain longer than the capacity keeps only its first `capacity_blocks` blocks,
        because a block is only reachable through the blocks before it.
        """
        hashes = _as_list(block_hashes)
        if len(hashes) > self.capacity_blocks:
            hashes = hashes[: self.capacity_blocks]
        lru = self._lru
        new = 0
        for h in reversed(hashes):  # tail first: see lookup()
            if h in lru:
                lru.move_to_end(h)
            else:
                lru[h] = None
                new += 1
        overflow = len(lru) - self.capacity_blocks
        for _ in range(max(overflow, 0)):
            lru.popitem(last=False)
        if overflow > 0:
            self.evicted_blocks += overflow
        self.inserted_blocks += new
        return new

    # ---- engine: where the blocks live ---------------------------------------------------
    def match(self, block_hashes: Iterable[int] | np.ndarray, *, record: bool = True) -> list[int]:
        """Block ids of the leading cached blocks (`lookup` semantics: counts and refreshes with `record`)."""
        hashes = _as_list(block_hashes)
        hit = self.lookup(hashes, record=record)
        return [self._lru[h] for h in hashes[:hit]]

    def insert_blocks(
        self, block_hashes: Iterable[int] | np.ndarray, block_ids: Sequence[int]
    ) -> tuple[list[int], list[int]]:
        """Store a chain and the block ids holding it; a hash already stored keeps its old block.

        Returns (block ids the cache now names that it did not before: the caller adds a
        reference to each; block ids evicted to stay within capacity: the caller drops one).
        """
        hashes = _as_list(block_hashes)[: self.capacity_blocks]
        lru = self._lru
        added: list[int] = []
        for h, b in zip(reversed(hashes), reversed(list(block_ids)[: len(hashes)]), strict=True):  # tail first
            if h in lru:
                lru.move_to_end(h)
            else:
                lru[h] = int(b)
                added.append(int(b))
        evicted = []
        while len(lru) > self.capacity_blocks:
            evicted.append(lru.popitem(last=False)[1])
        self.evicted_blocks += len(evicted)
        self.inserted_blocks += len(added)
        return added, evicted

    def evict(self, n: int, evictable: Callable[[int], bool]) -> list[int]:
        """Drop up to `n` blocks, least recently used first, among those `evictable(block_id)` allows
        (the engine: blocks no running request holds); returns their block ids."""
        if n <= 0:
            return []
        chosen = []
        for h, b in self._lru.items():
            if evictable(b):
                chosen.append(h)
                if len(chosen) == n:
                    break
        out = [self._lru.pop(h) for h in chosen]
        self.evicted_blocks += len(out)
        return out

    def clear(self) -> None:
        """Drop every block (counters are kept)."""
        self._lru.clear()

    def lru_order(self) -> list[int]:
        """Block hashes from least to most recently used (for tests and debugging)."""
        return list(self._lru)

    # ---- counters ------------------------------------------------------------------------
    @property
    def hit_tokens(self) -> int:
        return self.hit_blocks * self.block_size

    @property
    def miss_tokens(self) -> int:
        return self.miss_blocks * self.block_size

    @property
    def evicted_tokens(self) -> int:
        return self.evicted_blocks * self.block_size

    @property
    def hit_rate(self) -> float:
        """Hit blocks / looked-up blocks; NaN before any lookup."""
        total = self.hit_blocks + self.miss_blocks
        return self.hit_blocks / total if total else float("nan")

    def stats(self) -> dict[str, float | int]:
        """Counters as a JSON-able dict."""
        return {
            "capacity_blocks": self.capacity_blocks,
            "used_blocks": self.used_blocks,
            "block_size": self.block_size,
            "lookups": self.lookups,
            "hit_blocks": self.hit_blocks,
            "miss_blocks": self.miss_blocks,
            "hit_tokens": self.hit_tokens,
            "miss_tokens": self.miss_tokens,
            "inserted_blocks": self.inserted_blocks,
            "evicted_blocks": self.evicted_blocks,
            "hit_rate": self.hit_rate,
        }
