"""One DeepSeek-V3 decoder layer: pre-norm MLA, then pre-norm dense MLP or DeepSeekMoE."""

from __future__ import annotations

import torch
from torch import nn

from cloudmatrix.engine.kv_cache import AttentionBatch, PagedLatentCache
from cloudmatrix.engine.model.config import ModelConfig
from cloudmatrix.engine.model.mla import MLAttention
from cloudmatrix.engine.model.mlp import MLP
from cloudmatrix.engine.model.moe import MoE
from cloudmatrix.engine.model.norm import RMSNorm


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int, moe: bool):
        super().__init__()
        self.self_attn = MLAttention(config, layer_id)
        self.mlp: MLP | MoE = MoE(config) if moe else MLP(config.hidden_size, config.intermediate_size)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        batch: AttentionBatch,
        cache: PagedLatentCache,
        absorbed: bool | None = None,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, batch, cache, absorbed)
        return x + self.mlp(self.post_attention_layernorm(x))
