"""The caching pool: latent KV blocks in shared host memory, named by the chained hash of their tokens.

Storage is one shared tensor [pool_blocks, layers, block_size, width] that every worker maps; the
index (hash -> pool block, LRU order, pins) lives in the coordinator, which is the only writer of
the index. A prefill worker writes a request's blocks into the pool blocks the coordinator hands it
(cached prefix blocks are read, not recomputed); a decode worker copies them into its own paged
cache. Full blocks stay in the pool for later prompts with the same prefix (LRU, evicted whole);
a prompt's trailing partial block travels through a scratch pool block freed once decode admitted it.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.serving.prefix_cache import hash_token_blocks


def new_pool_storage(blocks: int, layers: int, block_size: int, width: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(blocks, layers, block_size, width, dtype=dtype).share_memory_()


def pool_to_cache(pool: torch.Tensor, blocks: list[int], cache_data: torch.Tensor, rows: torch.Tensor) -> None:
    """Copy len(rows) tokens from pool blocks (in order) into cache rows [layers, rows, width]."""
    if rows.numel() > len(blocks) * pool.shape[2]:
        raise ValueError("more rows than the pool blocks hold")
    src = pool[torch.tensor(blocks, dtype=torch.long)].permute(1, 0, 2, 3).reshape(pool.shape[1], -1, pool.shape[3])
    cache_data[:, rows] = src[:, : rows.numel()].to(cache_data.dtype)


def cache_to_pool(cache_data: torch.Tensor, rows: torch.Tensor, pool: torch.Tensor, blocks: list[int]) -> None:
    """Copy the tokens at cache rows into pool blocks (in order; the last block may be partial)."""
    bs = pool.shape[2]
    src = cache_data[:, rows].to(pool.dtype)  # [layers, n, width]
    for j, b in enumerate(blocks):
        part = src[:, j * bs : (j + 1) * bs]
        pool[b, :, : part.shape[1]] = part


class CachingPoolIndex:
    """hash -> pool block with LRU eviction and pins (blocks in a hand-over are never evicted)."""

    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 1:
            raise CloudMatrixError(f"the caching pool needs at least one block, got {num_blocks}")
        self.block_size = block_size
        self.num_blocks = num_blocks
        self._free = list(range(num_blocks - 1, -1, -1))
        self._by_hash: OrderedDict[int, int] = OrderedDict()  # oldest first
        self._pins: dict[int, int] = {}
        self.hit_blocks = 0
        self.lookups = 0

    def hashes(self, tokens: list[int]) -> list[int]:
        return hash_token_blocks(tokens, self.block_size)

    def lookup(self, hashes: list[int]) -> list[int]:
        """Pool blocks of the longest cached prefix (pinned; unpin after use)."""
        hit = []
        for h in hashes:
            b = self._by_hash.get(h)
            if b is None:
                break
            self._by_hash.move_to_end(h)
            hit.append(b)
        self.lookups += 1
        self.hit_blocks += len(hit)
        self.pin(hit)
        return hit

    def allocate(self, n: int) -> list[int]:
        """n fresh pool blocks (pinned), evicting least recently used unpinned cached blocks if needed."""
        out = []
        while len(out) < n:
            if not self._free:
                victim = next((h for h, b in self._by_hash.items() if not self._pins.get(b)), None)
                if victim is None:
                    self.unpin(out)
                    self._free.extend(out)
                    raise CloudMatrixError(
                        f"caching pool full: {self.num_blocks} blocks all in hand-overs; give the pool more blocks"
                    )
                self._free.append(self._by_hash.pop(victim))
            out.append(self._free.pop())
        self.pin(out)
        return out

    def publish(self, hashes: list[int], blocks: list[int]) -> None:
        """Name freshly written full blocks by their hashes (a block already named keeps its first copy)."""
        for h, b in zip(hashes, blocks, strict=False):
            if h not in self._by_hash and b not in self._by_hash.values():
                self._by_hash[h] = b

    def pin(self, blocks: list[int]) -> None:
        for b in blocks:
            self._pins[b] = self._pins.get(b, 0) + 1

    def unpin(self, blocks: list[int]) -> None:
        named = set(self._by_hash.values())
        for b in blocks:
            self._pins[b] -= 1
            if not self._pins[b]:
                del self._pins[b]
                if b not in named:  # scratch (a partial tail, or a duplicate): back to the free list
                    self._free.append(b)

    @property
    def cached_blocks(self) -> int:
        return len(self._by_hash)
