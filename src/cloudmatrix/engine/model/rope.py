"""Rotary position embedding for the rope part of MLA, with DeepSeek's YaRN scaling.

Mirrors transformers' `_compute_yarn_parameters` and DeepSeek-V3 attention:
- inverse frequencies blend interpolation (divided by `factor`) and extrapolation
  with a linear ramp between the beta_fast / beta_slow correction dimensions;
- cos/sin are multiplied by the YaRN attention factor
  (mscale(factor, mscale) / mscale(factor, mscale_all_dim));
- the softmax scale gets mscale(factor, mscale_all_dim)^2 (`softmax_scale`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cloudmatrix.engine.model.config import ModelConfig


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def softmax_scale(config: ModelConfig) -> float:
    """1/sqrt(qk_head_dim), times mscale_all_dim^2 under YaRN (longer contexts get sharper softmax)."""
    scale = config.qk_head_dim**-0.5
    rs = config.rope_scaling
    if config.rope_type != "default" and rs.get("mscale_all_dim"):
        m = yarn_mscale(_factor(config), rs["mscale_all_dim"])
        scale = scale * m * m
    return scale


def _factor(config: ModelConfig) -> float:
    rs = config.rope_scaling
    factor = rs.get("factor")
    if factor is None:
        factor = config.max_position_embeddings / rs["original_max_position_embeddings"]
    return float(factor)


def rope_parameters(config: ModelConfig) -> tuple[torch.Tensor, float]:
    """(inv_freq [dim/2], attention_factor) for the config's rope type."""
    dim, base = config.qk_rope_head_dim, config.rope_theta
    # Explicit CPU device: the loader builds models under a meta-device context.
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float, device="cpu") / dim)
    if config.rope_type == "default":
        return 1.0 / pos_freqs, 1.0

    rs = config.rope_scaling
    factor = _factor(config)
    orig_max = rs.get("original_max_position_embeddings", config.max_position_embeddings)
    attention_factor = rs.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = rs.get("mscale"), rs.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
        else:
            attention_factor = yarn_mscale(factor)
    beta_fast = rs.get("beta_fast") or 32
    beta_slow = rs.get("beta_slow") or 1

    def correction_dim(num_rotations: float) -> float:
        return (dim * math.log(orig_max / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rs.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32, device="cpu") - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq, float(attention_factor)


class RotaryEmbedding(nn.Module):
    """cos/sin for a batch of positions, computed once per forward and shared by all layers."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.interleave = config.rope_interleave
        inv_freq, self.attention_factor = rope_parameters(config)
        self.inv_freq = inv_freq  # a plain attribute: derived from the config, never loaded

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Half-width cos, sin [..., dim/2]: each frequency rotates one pair of dimensions."""
        freqs = positions[..., None].float() * self.inv_freq.to(positions.device)
        cos = freqs.cos() * self.attention_factor
        sin = freqs.sin() * self.attention_factor
        return cos.to(dtype), sin.to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, interleave: bool) -> torch.Tensor:
    """Rotate x [..., dim]; cos/sin broadcast to [..., dim/2].

    interleave=True: pairs are (x0, x1), (x2, x3), ... as in DeepSeek checkpoints; the result is laid out
    [rotated evens, rotated odds], exactly as transformers does. Queries and keys share the layout, so
    dot products are the same as with an in-place interleaved rotation.
    """
    if interleave:
        x1, x2 = x[..., 0::2], x[..., 1::2]
    else:
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
