"""Paged KV cache for MLA: per token and layer it keeps only the compressed latent and the rope key.

Storage is one tensor [layers, num_blocks * block_size, kv_lora_rank + qk_rope_head_dim]: row
`slot = block * block_size + offset` holds [c_kv (normalised latent) | k_rope (rotated)] of one
token. Nothing per head is stored; that is MLA's point: for DeepSeek-V3 that is
(512 + 64) values x 61 layers per token instead of 128 heads x (192 + 128) x 61.

Each sequence owns a block table (list of block ids) and a length. A forward pass is described by
an `AttentionBatch`: which sequences, how many new tokens each brings, where those tokens go
(slots) and where every token of each sequence lives (gather index).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cloudmatrix.errors import CloudMatrixError


@dataclass
class AttentionBatch:
    """Attention metadata of one forward pass; tokens are packed sequence after sequence."""

    seq_ids: list[int]
    query_lens: list[int]  # new tokens per sequence
    context_lens: list[int]  # tokens already cached before this pass
    positions: torch.Tensor  # [T] int64, absolute position of each new token
    slots: torch.Tensor  # [T] int64, cache row each new token is written to
    gather_index: torch.Tensor  # [B, Lmax] int64, cache rows of all tokens of each sequence (0-padded)
    _masks: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

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

    def decode_mask(self) -> torch.Tensor:
        """[B, q, Lmax] bool: key j is visible to new token i iff j <= context_len + i (causal)."""
        if "decode" not in self._masks:
            q = self.uniform_query_len
            if q is None:
                raise ValueError("the absorbed path needs the same number of new tokens in every sequence")
            L, dev = self.gather_index.shape[1], self.gather_index.device
            ctx = torch.tensor(self.context_lens, device=dev)[:, None, None]
            j = torch.arange(L, device=dev)[None, None, :]
            i = torch.arange(q, device=dev)[None, :, None]
            self._masks["decode"] = j <= ctx + i
        return self._masks["decode"]


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
    ):
        self.num_layers = num_layers
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.kv_lora_rank = kv_lora_rank
        self.width = kv_lora_rank + qk_rope_head_dim
        self.data = torch.zeros(num_layers, num_blocks * block_size, self.width, dtype=dtype, device=device)
        self._free = list(range(num_blocks - 1, -1, -1))  # pop() hands out low block ids first
        self._tables: dict[int, list[int]] = {}
        self._lens: dict[int, int] = {}
        self._next_id = 0

    @property
    def bytes_per_token(self) -> int:
        return self.num_layers * self.width * self.data.element_size()

    @property
    def free_blocks(self) -> int:
        return len(self._free)

    # -- sequences -------------------------------------------------------------------------------
    def add_sequence(self) -> int:
        sid = self._next_id
        self._next_id += 1
        self._tables[sid] = []
        self._lens[sid] = 0
        return sid

    def free_sequence(self, sid: int) -> None:
        self._free.extend(reversed(self._tables.pop(sid)))
        del self._lens[sid]

    def seq_len(self, sid: int) -> int:
        return self._lens[sid]

    def block_table(self, sid: int) -> list[int]:
        return list(self._tables[sid])

    def set_len(self, sid: int, length: int) -> None:
        """Set how many tokens of `sid` are valid (rolls back rejected speculative tokens)."""
        if length > len(self._tables[sid]) * self.block_size:
            raise ValueError(f"sequence {sid}: length {length} exceeds its allocated blocks")
        self._lens[sid] = length
        keep = -(-length // self.block_size)
        while len(self._tables[sid]) > keep:
            self._free.append(self._tables[sid].pop())

    def _reserve(self, sid: int, length: int) -> None:
        table = self._tables[sid]
        need = -(-length // self.block_size) - len(table)
        if need > len(self._free):
            raise CloudMatrixError(
                f"KV cache out of blocks: need {need} more, {len(self._free)} free of {self.num_blocks}; "
                "allocate more blocks or run fewer/shorter sequences"
            )
        for _ in range(need):
            table.append(self._free.pop())

    # -- one forward pass ------------------------------------------------------------------------
    def plan(self, seq_ids: list[int], query_lens: list[int]) -> AttentionBatch:
        """Reserve room for `query_lens[i]` new tokens after the cached ones and describe the pass.

        Lengths advance immediately; call `set_len` afterwards to drop rejected tokens.
        """
        bs = self.block_size
        context = [self._lens[s] for s in seq_ids]
        totals = [c + q for c, q in zip(context, query_lens, strict=True)]
        for s, n in zip(seq_ids, totals, strict=True):
            self._reserve(s, n)
            self._lens[s] = n
        max_blocks = max(-(-n // bs) for n in totals)
        tables = torch.tensor([self._tables[s][: -(-n // bs)] + [0] * (max_blocks - -(-n // bs))
                               for s, n in zip(seq_ids, totals, strict=True)], dtype=torch.long)  # fmt: skip
        rows = (tables[:, :, None] * bs + torch.arange(bs)).view(len(seq_ids), -1)[:, : max(totals)]
        positions = torch.cat([torch.arange(c, n) for c, n in zip(context, totals, strict=True)])
        seq_of_token = torch.repeat_interleave(torch.arange(len(seq_ids)), torch.tensor(query_lens))
        slots = rows[seq_of_token, positions]
        dev = self.data.device
        return AttentionBatch(
            list(seq_ids), list(query_lens), context, positions.to(dev), slots.to(dev), rows.contiguous().to(dev)
        )

    def write(self, layer: int, batch: AttentionBatch, latent: torch.Tensor) -> None:
        """Store the [T, width] latents of the batch's new tokens."""
        self.data[layer].index_copy_(0, batch.slots, latent.to(self.data.dtype))

    def gather(self, layer: int, batch: AttentionBatch) -> torch.Tensor:
        """[B, Lmax, width]: every cached token of each sequence (padding rows are masked by callers)."""
        idx = batch.gather_index
        return self.data[layer].index_select(0, idx.reshape(-1)).view(*idx.shape, self.width)
