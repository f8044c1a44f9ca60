"""Paged KV cache for MLA: per token and layer it keeps only the compressed latent and the rope key.

Storage is one tensor [layers, num_blocks * block_size, kv_lora_rank + qk_rope_head_dim]: row
`slot = block * block_size + offset` holds [c_kv (normalised latent) | k_rope (rotated)] of one
token. Nothing per head is stored; that is MLA's point: for DeepSeek-V3 that is
(512 + 64) values x 61 layers per token instead of 128 heads x (192 + 128) x 61.

Which blocks a sequence owns is decided by the control plane: `serving.kv_blocks.KVBlockManager`
in block-id mode (the runtime's scheduler shares one with this cache). A forward pass is described
by an `AttentionBatch` built from the sequences' block tables: where each new token's latent goes
(slots) and, per sequence, which blocks hold its context. Attention reads exactly those blocks
(ragged): nothing is padded to the longest sequence of the batch.

`add_sequence` / `plan` / `set_len` keep a small self-contained API for tests and static callers;
`plan` is atomic: if the blocks for every sequence of the pass do not fit, nothing is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.serving.kv_blocks import KVBlockManager

# Passes where every sequence brings at most this many new tokens (decode, MTP verification) run the
# absorbed latent attention; longer ones (prefill) up-project K/V, which costs fewer FLOPs there.
ABSORBED_MAX_QUERY = 4
# The absorbed path scores keys in chunks of this many tokens (whole blocks): a sequence's last chunk
# is padded (masked), never the batch to its longest sequence. Chunks rather than single blocks keep
# the batched matmuls wide enough to be efficient on a CPU (16-token blocks: 4 blocks per chunk).
ATTENTION_CHUNK_TOKENS = 64


@dataclass
class DecodeView:
    """Ragged block layout of the first `n` sequences (all with `q` new tokens), for absorbed attention."""

    n: int
    q: int
    # dense: every sequence holds the same number of blocks, so each is one chunk of all of them (no
    # padding, one plain softmax); else chunks of C blocks, each sequence padded to whole chunks
    dense: bool
    blocks: torch.Tensor  # [NC * C] block ids, sequence after sequence
    chunk_seq: torch.Tensor  # [NC] which of the n sequences each chunk belongs to
    visible: torch.Tensor  # [NC, q, 1, C * bs] bool: key visible to new token i (causal; padding never)


@dataclass
class AttentionBatch:
    """Attention metadata of one forward pass; tokens are packed sequence after sequence.

    The first `num_decode` sequences (same query length, <= ABSORBED_MAX_QUERY) run the absorbed
    latent attention over their blocks; the others run the naive path one sequence at a time.
    """

    seq_ids: list[int]
    query_lens: list[int]  # new tokens per sequence
    context_lens: list[int]  # tokens already cached before this pass
    positions: torch.Tensor  # [T] int64, absolute position of each new token
    slots: torch.Tensor  # [T] int64, cache row each new token is written to
    block_size: int
    num_decode: int
    tables: list[list[int]] = field(repr=False)  # per sequence, the blocks holding its tokens after the pass
    _views: dict[int, DecodeView] = field(default_factory=dict, repr=False)
    _rows: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def build(
        cls,
        seq_ids: list[int],
        tables: list[list[int]],
        context_lens: list[int],
        query_lens: list[int],
        block_size: int,
        num_decode: int | None = None,
        device: torch.device | str = "cpu",
    ) -> AttentionBatch:
        """Describe a pass from block tables (each long enough for context + query tokens)."""
        bs = block_size
        ctx = np.asarray(context_lens, dtype=np.int64)
        q = np.asarray(query_lens, dtype=np.int64)
        total = ctx + q
        used = -(-total // bs)
        tabs = [t[:n] for t, n in zip(tables, used.tolist(), strict=True)]
        if any(len(t) < n for t, n in zip(tabs, used.tolist(), strict=True)):
            raise ValueError("a block table is shorter than its sequence")
        if num_decode is None:
            uniform = q.size > 0 and (q == q[0]).all() and q[0] <= ABSORBED_MAX_QUERY
            num_decode = len(q) if uniform else 0
        # token -> (sequence, position) -> cache row, vectorised over the packed tokens
        seq = np.repeat(np.arange(len(q)), q)
        first = np.cumsum(q) - q
        pos = ctx[seq] + np.arange(int(q.sum())) - first[seq]
        flat = np.fromiter((b for t in tabs for b in t), dtype=np.int64, count=int(used.sum()))
        table_start = np.cumsum(used) - used
        slots = flat[table_start[seq] + pos // bs] * bs + pos % bs
        return cls(
            list(seq_ids), [int(n) for n in q], [int(c) for c in ctx],
            torch.from_numpy(pos).to(device), torch.from_numpy(slots).to(device), bs, int(num_decode), tabs,
        )  # fmt: skip

    @property
    def num_seqs(self) -> int:
        return len(self.seq_ids)

    @property
    def total_lens(self) -> list[int]:
        return [c + q for c, q in zip(self.context_lens, self.query_lens, strict=True)]

    @property
    def uniform_query_len(self) -> int | None:
        q = self.query_lens[0] if self.query_lens else 0
        return q if all(n == q for n in self.query_lens) else None

    def decode_tokens(self, n: int) -> int:
        return sum(self.query_lens[:n])

    def decode_view(self, n: int) -> DecodeView:
        """Blocks of the first n sequences, their owner and the causal visibility mask (built once per pass)."""
        if n not in self._views:
            q = self.query_lens[0]
            if any(k != q for k in self.query_lens[:n]):
                raise ValueError("the absorbed path needs the same number of new tokens in every sequence")
            dev, bs = self.positions.device, self.block_size
            counts = {len(t) for t in self.tables[:n]}
            dense = len(counts) == 1
            C = counts.pop() if dense else max(1, ATTENTION_CHUNK_TOKENS // bs)
            # each sequence's blocks, padded with its first block to whole chunks (padding is masked)
            padded = [t + [t[0]] * (-len(t) % C) for t in self.tables[:n]]
            chunks = np.array([len(t) // C for t in padded], dtype=np.int64)
            blocks = np.fromiter((b for t in padded for b in t), dtype=np.int64, count=int(chunks.sum()) * C)
            owner = np.repeat(np.arange(n), chunks)
            index_in_seq = np.arange(owner.size) - (np.cumsum(chunks) - chunks)[owner]
            key_pos = index_in_seq[:, None] * (C * bs) + np.arange(C * bs)  # [NC, C * bs]
            ctx = np.asarray(self.context_lens[:n], dtype=np.int64)[owner]
            visible = key_pos[:, None, :] <= ctx[:, None, None] + np.arange(q)[None, :, None]
            self._views[n] = DecodeView(
                n, q, dense, torch.from_numpy(blocks).to(dev), torch.from_numpy(owner).to(dev),
                torch.from_numpy(visible[:, :, None, :]).to(dev),
            )  # fmt: skip
        return self._views[n]

    def rows(self, b: int) -> torch.Tensor:
        """Cache rows of every token of sequence b (context and new), in position order."""
        if b not in self._rows:
            bs, n = self.block_size, self.context_lens[b] + self.query_lens[b]
            t = torch.tensor(self.tables[b], dtype=torch.long)
            self._rows[b] = ((t[:, None] * bs + torch.arange(bs)).reshape(-1)[:n]).to(self.positions.device)
        return self._rows[b]


class PagedLatentCache:
    """Block-paged storage of MLA latents for `num_layers` layers (main layers, then MTP layers)."""

    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        block_size: int,
        kv_lora_rank: int,
        qk_rope_head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        blocks: KVBlockManager | None = None,
    ):
        if blocks is not None and (blocks.total_blocks != num_blocks or blocks.block_size != block_size):
            raise ValueError("the block manager must have the cache's num_blocks and block_size")
        self.num_layers = num_layers
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.kv_lora_rank = kv_lora_rank
        self.width = kv_lora_rank + qk_rope_head_dim
        self.data = torch.zeros(num_layers, num_blocks * block_size, self.width, dtype=dtype, device=device)
        self.blocks = blocks if blocks is not None else KVBlockManager(num_blocks, block_size, block_ids=True)
        self._lens: dict[int, int] = {}
        self._next_id = 0

    @property
    def bytes_per_token(self) -> int:
        return self.num_layers * self.width * self.data.element_size()

    @property
    def free_blocks(self) -> int:
        return self.blocks.num_free

    @property
    def device(self) -> torch.device:
        return self.data.device

    # -- the self-contained sequence API -----------------------------------------------------------
    def add_sequence(self) -> int:
        sid = self._next_id
        self._next_id += 1
        self._lens[sid] = 0
        return sid

    def free_sequence(self, sid: int) -> None:
        self.blocks.free(sid)
        del self._lens[sid]

    def seq_len(self, sid: int) -> int:
        return self._lens[sid]

    def block_table(self, sid: int) -> list[int]:
        return list(self.blocks.table(sid))

    def set_len(self, sid: int, length: int) -> None:
        """Set how many tokens of `sid` are valid (rolls back rejected speculative tokens)."""
        if self.blocks.blocks_for(length) > len(self.blocks.table(sid)):
            raise ValueError(f"sequence {sid}: length {length} exceeds its allocated blocks")
        self._lens[sid] = length
        self.blocks.shrink(sid, length)

    def plan(self, seq_ids: list[int], query_lens: list[int]) -> AttentionBatch:
        """Reserve room for `query_lens[i]` new tokens after the cached ones and describe the pass.

        All-or-nothing: when the blocks do not fit, raises and nothing is allocated. Lengths advance
        immediately; call `set_len` afterwards to drop rejected tokens.
        """
        context = [self._lens[s] for s in seq_ids]
        totals = [c + q for c, q in zip(context, query_lens, strict=True)]
        ids = np.asarray(seq_ids, dtype=np.int64)
        if not self.blocks.allocate_many(ids, np.asarray(totals, dtype=np.int64)):
            need = self.blocks.extra_blocks(ids, np.asarray(totals))
            raise CloudMatrixError(
                f"KV cache out of blocks: need {need} more, {self.blocks.num_free} free of {self.num_blocks}; "
                "allocate more blocks or run fewer/shorter sequences"
            )
        for s, n in zip(seq_ids, totals, strict=True):
            self._lens[s] = n
        tables = [self.blocks.table(s) for s in seq_ids]
        return AttentionBatch.build(
            list(seq_ids), tables, context, list(query_lens), self.block_size, None, self.device
        )

    # -- one forward pass ------------------------------------------------------------------------
    def write(self, layer: int, batch: AttentionBatch, latent: torch.Tensor) -> None:
        """Store the [T, width] latents of the batch's new tokens."""
        self.data[layer].index_copy_(0, batch.slots, latent.to(self.data.dtype))

    def gather_blocks(self, layer: int, block_ids: torch.Tensor) -> torch.Tensor:
        """[NB, block_size, width]: the given blocks of one layer."""
        return self.data[layer].view(self.num_blocks, self.block_size, self.width).index_select(0, block_ids)

    def gather_rows(self, layer: int, rows: torch.Tensor) -> torch.Tensor:
        """[N, width]: the given cache rows of one layer."""
        return self.data[layer].index_select(0, rows)
