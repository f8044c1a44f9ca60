"""Multi-Token Prediction module (DeepSeek-V3 layout, one per `num_nextn_predict_layers`).

MTP depth k predicts token i + 1 + k from position i:
    h' = eh_proj([enorm(embed(t_{i+1})) | hnorm(h_i)])      h_i: previous depth's output at i
    h' = decoder_layer(h')                                   (its own MLA cache, causal over i)
    logits = head(shared_head.norm(h'))
In an HF checkpoint its weights sit at `model.layers.{num_hidden_layers + k}.*`; `embed_tokens`
and `shared_head.head` there duplicate the main model's and are shared with it here.
"""

from __future__ import annotations

import torch
from torch import nn

from cloudmatrix.engine.kv_cache import AttentionBatch, PagedLatentCache
from cloudmatrix.engine.model.config import ModelConfig
from cloudmatrix.engine.model.decoder import DecoderLayer
from cloudmatrix.engine.model.norm import RMSNorm


class SharedHead(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class MTPModule(DecoderLayer):
    """A decoder layer plus the MTP input fusion; parameter names match the HF checkpoint."""

    def __init__(self, config: ModelConfig, layer_id: int):
        super().__init__(config, layer_id, moe=config.is_moe_layer(layer_id))
        H = config.hidden_size
        self.enorm = RMSNorm(H, config.rms_norm_eps)
        self.hnorm = RMSNorm(H, config.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * H, H, bias=False)
        self.shared_head = SharedHead(config)

    def forward_mtp(
        self,
        embeds: torch.Tensor,
        prev_hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        batch: AttentionBatch,
        cache: PagedLatentCache,
        absorbed: bool | None = None,
    ) -> torch.Tensor:
        """Hidden state [T, H] (before shared_head.norm) for next-token embeds and previous hidden states."""
        x = self.eh_proj(torch.cat([self.enorm(embeds), self.hnorm(prev_hidden)], dim=-1))
        return self.forward(x, cos, sin, batch, cache, absorbed)
