"""The DeepSeek-V3 causal LM: embeddings, decoder layers, final norm, LM head, optional MTP modules.

Tokens are packed: a forward pass takes input_ids [T] of several sequences back to back and an
`AttentionBatch` saying which sequence each token belongs to and where its latent is cached.
"""

from __future__ import annotations

import torch
from torch import nn

from cloudmatrix.engine.kv_cache import ABSORBED_MAX_QUERY, AttentionBatch, PagedLatentCache
from cloudmatrix.engine.model.config import ModelConfig
from cloudmatrix.engine.model.decoder import DecoderLayer
from cloudmatrix.engine.model.moe import MoE
from cloudmatrix.engine.model.mtp import MTPModule
from cloudmatrix.engine.model.norm import RMSNorm
from cloudmatrix.engine.model.rope import RotaryEmbedding

__all__ = ["ABSORBED_MAX_QUERY", "DeepseekV3"]


class DeepseekV3(nn.Module):
    def __init__(self, config: ModelConfig, num_mtp: int | None = None):
        super().__init__()
        self.config = config
        L = config.num_hidden_layers
        n_mtp = config.num_nextn_predict_layers if num_mtp is None else num_mtp
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(config, i, config.is_moe_layer(i)) for i in range(L)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.mtp = nn.ModuleList([MTPModule(config, L + k) for k in range(n_mtp)])
        self.rotary = RotaryEmbedding(config)

    @property
    def num_cache_layers(self) -> int:
        """KV cache layers this model writes: main layers, then one per MTP module."""
        return len(self.layers) + len(self.mtp)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    def moe_layers(self) -> list[MoE]:
        """Every DeepSeekMoE block (main and MTP), e.g. to swap in another experts backend."""
        return [m for m in self.modules() if isinstance(m, MoE)]

    def new_cache(
        self, num_blocks: int, block_size: int = 16, dtype: torch.dtype | None = None, blocks=None
    ) -> PagedLatentCache:
        """A paged latent cache for this model; `blocks` is the KVBlockManager that assigns its blocks."""
        c = self.config
        return PagedLatentCache(
            self.num_cache_layers, num_blocks, block_size, c.kv_lora_rank, c.qk_rope_head_dim,
            dtype=dtype or self.dtype, device=self.embed_tokens.weight.device, blocks=blocks,
        )  # fmt: skip

    def forward(
        self,
        input_ids: torch.Tensor,
        batch: AttentionBatch,
        cache: PagedLatentCache,
        absorbed: bool | None = None,
    ) -> torch.Tensor:
        """Final-norm hidden states [T, H] of packed tokens input_ids [T].

        absorbed=None runs the absorbed (latent) attention for the batch's decode-shaped sequences
        (`batch.num_decode`, see ABSORBED_MAX_QUERY) and the naive up-projecting path for the rest
        (prefill chunks); True / False force one path for every sequence.
        """
        x = self.embed_tokens(input_ids)
        cos, sin = self.rotary(batch.positions, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, batch, cache, absorbed)
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    def forward_mtp(
        self,
        depth: int,
        next_ids: torch.Tensor,
        prev_hidden: torch.Tensor,
        batch: AttentionBatch,
        cache: PagedLatentCache,
        absorbed: bool | None = None,
        rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MTP module `depth` at the batch's positions i, fed token i+1 and the hidden state at i.

        Returns (hidden [T, H] for the next depth, logits predicting token i+1+depth+1: [T, V], or
        only at `rows` when given — the runtime needs the draft of one position per sequence).
        """
        module: MTPModule = self.mtp[depth]
        cos, sin = self.rotary(batch.positions, prev_hidden.dtype)
        h = module.forward_mtp(self.embed_tokens(next_ids), prev_hidden, cos, sin, batch, cache, absorbed)
        head_in = h if rows is None else h.index_select(0, rows)
        return h, self.lm_head(module.shared_head.norm(head_in))
