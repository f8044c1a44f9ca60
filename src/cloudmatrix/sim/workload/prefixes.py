"""Shared prompt prefixes: which group a request joins and the hashes of its KV blocks.

Requests in a shared-prefix group share the KV blocks of their first `prefix_len` tokens,
which is what the caching pool can reuse. Blocks inside the shared prefix hash from
(group, block index), every other block from (request, block index).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cloudmatrix.errors import CloudMatrixError

# Block keys: bit 63 marks a shared-prefix block, bits 24..62 the group or request, bits
# 0..23 the block index (prompts up to 16M blocks).
_SHARED = 1 << 63


class PrefixSpec(BaseModel):
    """Shared-prefix groups (system prompts, documents, multi-turn history).

    A `fraction` of requests joins one of `groups` groups (chosen by `popularity`) and
    shares its first `prefix_len` tokens. mode 'within': the prefix is part of the
    drawn input length (which must then be >= prefix_len); 'prepend': the prompt is
    prefix_len + the drawn length.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    groups: int = Field(ge=1, le=1 << 30)
    prefix_len: int = Field(ge=1, le=1 << 24)
    popularity: Literal["uniform", "zipf"] = "uniform"
    s: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    fraction: float = Field(default=1.0, ge=0, le=1)
    mode: Literal["within", "prepend"] = "within"


def group_popularity(groups: int, kind: str, s: float = 1.0) -> np.ndarray:
    """Probability of each prefix group: uniform, or zipf (group g ∝ 1/(g+1)**s)."""
    if kind == "uniform":
        return np.full(groups, 1.0 / groups)
    if kind == "zipf":
        w = 1.0 / np.arange(1, groups + 1, dtype=np.float64) ** s
        return w / w.sum()
    raise CloudMatrixError(f"unknown prefix popularity {kind!r}; use 'uniform' or 'zipf'.")


def check_block_size(block_size: int) -> int:
    if block_size < 1:
        raise CloudMatrixError(f"block_size must be >= 1 token, got {block_size}.")
    return int(block_size)


def block_hashes(i: int, input_len: int, prefix_len: int, group: int, block_size: int) -> np.ndarray:
    """Hashes (int64, >= 0) of request `i`'s full prompt blocks.

    The keys are distinct 64-bit values fed to a bijective mixer, so distinct blocks only
    collide through the final 63-bit mask (negligible).
    """
    bs = check_block_size(block_size)
    n_full = int(input_len) // bs
    n_shared = int(prefix_len) // bs  # 0 when ungrouped
    key = np.arange(n_full, dtype=np.uint64)
    if n_shared:
        key[:n_shared] += np.uint64(_SHARED | (int(group) << 24))
    key[n_shared:] += np.uint64(int(i) << 24)
    return _mix_to_int64(key)


def block_hashes_bulk(
    idx: np.ndarray, input_len: np.ndarray, prefix_len: np.ndarray, group: np.ndarray, block_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """`block_hashes` for requests `idx` at once (the columns are already indexed by idx):
    (flat hashes, offsets); request idx[k] owns flat[offsets[k]:offsets[k + 1]]."""
    bs = check_block_size(block_size)
    n_full = input_len // bs
    n_shared = prefix_len // bs
    offsets = np.zeros(idx.size + 1, dtype=np.int64)
    np.cumsum(n_full, out=offsets[1:])
    j = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], n_full)
    shared = j < np.repeat(n_shared, n_full)
    owner = np.where(shared, np.repeat(group, n_full), np.repeat(idx, n_full))
    key = (owner.astype(np.uint64) << np.uint64(24)) | j.astype(np.uint64)
    key[shared] |= np.uint64(_SHARED)
    return _mix_to_int64(key), offsets


def _mix_to_int64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (a bijection on uint64, in place) masked to a non-negative int64."""
    x += np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    x &= np.uint64((1 << 63) - 1)
    return x.view(np.int64)
