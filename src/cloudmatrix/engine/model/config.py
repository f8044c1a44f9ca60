"""The DeepSeek-V3 architecture hyper-parameters, read from a Hugging Face `config.json`.

Only the fields the engine uses are kept. Both rope layouts are accepted: the
transformers-5 `rope_parameters` dict (with `rope_theta` inside) and the
original DeepSeek `rope_scaling` + `rope_theta` pair.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudmatrix.errors import CloudMatrixError


def _quantization(q: dict[str, Any] | None) -> dict[str, Any]:
    """Accept DeepSeek's block-FP8 `quantization_config`; refuse every other scheme in one line."""
    if not q:
        return {}
    method = q.get("quant_method")
    if method != "fp8":
        raise CloudMatrixError(
            f"quantization_config.quant_method {method!r} is not supported; only DeepSeek's block-FP8 ('fp8') "
            "checkpoints are dequantised on load (or pass a float checkpoint)"
        )
    fmt = q.get("fmt", "e4m3")
    if fmt != "e4m3":
        raise CloudMatrixError(f"quantization_config.fmt {fmt!r} is not supported; only 'e4m3' block-FP8 is")
    block = q.get("weight_block_size")
    if not (isinstance(block, list | tuple) and len(block) == 2 and all(isinstance(b, int) and b > 0 for b in block)):
        raise CloudMatrixError(
            f"quantization_config.weight_block_size must be two positive ints such as [128, 128], got {block!r}"
        )
    return {**q, "weight_block_size": [int(b) for b in block]}


def _flag(d: dict[str, Any], key: str, default: bool) -> bool:
    """A JSON boolean; `bool("false")` is True, so a string or number here is an error, not a guess."""
    value = d.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise CloudMatrixError(f"config.json: {key} must be true or false, got {value!r}")
    return value


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    moe_intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    kv_lora_rank: int
    q_lora_rank: int | None
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    n_routed_experts: int
    n_shared_experts: int
    num_experts_per_tok: int
    n_group: int = 1
    topk_group: int = 1
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = True
    first_k_dense_replace: int = 0
    num_nextn_predict_layers: int = 0
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    # Scaling dict as transformers normalises it: rope_type, factor, mscale, ...; empty = plain RoPE.
    rope_scaling: dict[str, Any] = field(default_factory=dict)
    rope_interleave: bool = True
    attention_bias: bool = False
    tie_word_embeddings: bool = False
    hidden_act: str = "silu"
    initializer_range: float = 0.02
    eos_token_id: int | None = None
    # The checkpoint's `quantization_config` (kept, never dropped: FP8 weights must be dequantised on load).
    quantization_config: dict[str, Any] = field(default_factory=dict)

    @property
    def fp8_block_size(self) -> tuple[int, int] | None:
        """(rows, cols) of a block-FP8 checkpoint's scale blocks; None for a float checkpoint."""
        q = self.quantization_config
        return tuple(q["weight_block_size"]) if q else None

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def rope_type(self) -> str:
        return self.rope_scaling.get("rope_type", self.rope_scaling.get("type", "default"))

    def is_moe_layer(self, layer: int) -> bool:
        return layer >= self.first_k_dense_replace and self.n_routed_experts > 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        required = [
            "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
            "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
            "n_routed_experts", "num_experts_per_tok",
        ]  # fmt: skip
        missing = [k for k in required if d.get(k) is None]
        if missing:
            raise CloudMatrixError(f"model config lacks {', '.join(missing)}; pass a DeepSeek-V3 style config.json")
        if d.get("hidden_act", "silu") != "silu":
            raise CloudMatrixError(f"hidden_act {d['hidden_act']!r} is not supported; only 'silu' is")
        rope = dict(d.get("rope_parameters") or d.get("rope_scaling") or {})
        theta = rope.pop("rope_theta", None) or d.get("rope_theta") or 10000.0
        if rope.get("rope_type", rope.get("type", "default")) == "default":
            rope = {}
        elif rope.get("rope_type", rope.get("type")) != "yarn":
            kind = rope.get("rope_type", rope.get("type"))
            raise CloudMatrixError(f"rope type {kind!r} is not supported; use 'yarn' or none")
        eos = d.get("eos_token_id")
        mtp = d.get("num_nextn_predict_layers", d.get("num_mtp_layers", 0)) or 0
        cfg = cls(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            moe_intermediate_size=d["moe_intermediate_size"],
            num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=d["num_attention_heads"],
            kv_lora_rank=d["kv_lora_rank"],
            q_lora_rank=d.get("q_lora_rank"),
            qk_nope_head_dim=d["qk_nope_head_dim"],
            qk_rope_head_dim=d["qk_rope_head_dim"],
            v_head_dim=d["v_head_dim"],
            n_routed_experts=d["n_routed_experts"],
            n_shared_experts=d.get("n_shared_experts") or 0,
            num_experts_per_tok=d["num_experts_per_tok"],
            n_group=d.get("n_group") or 1,
            topk_group=d.get("topk_group") or 1,
            routed_scaling_factor=float(d.get("routed_scaling_factor", 1.0)),
            norm_topk_prob=_flag(d, "norm_topk_prob", True),
            first_k_dense_replace=d.get("first_k_dense_replace") or 0,
            num_nextn_predict_layers=mtp,
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=d.get("max_position_embeddings", 4096),
            rope_theta=float(theta),
            rope_scaling=rope,
            rope_interleave=_flag(d, "rope_interleave", True),
            attention_bias=_flag(d, "attention_bias", False),
            tie_word_embeddings=_flag(d, "tie_word_embeddings", False),
            initializer_range=float(d.get("initializer_range", 0.02)),
            eos_token_id=eos[0] if isinstance(eos, list) else eos,
            quantization_config=_quantization(d.get("quantization_config")),
        )
        cfg.validate()
        return cfg

    @classmethod
    def from_json(cls, path: str | Path) -> ModelConfig:
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise CloudMatrixError(f"no config at {path}; point at a Hugging Face model folder") from None
        except json.JSONDecodeError as e:
            raise CloudMatrixError(f"{path} is not valid JSON: {e}") from None
        return cls.from_dict(d)

    def validate(self) -> None:
        E, g = self.n_routed_experts, self.n_group
        if E % g:
            raise CloudMatrixError(f"n_routed_experts={E} is not divisible by n_group={g}")
        if not 1 <= self.topk_group <= g:
            raise CloudMatrixError(f"topk_group={self.topk_group} must lie in 1..n_group={g}")
        if self.num_experts_per_tok > self.topk_group * (E // g):
            raise CloudMatrixError(
                f"num_experts_per_tok={self.num_experts_per_tok} exceeds the experts in topk_group groups "
                f"({self.topk_group} x {E // g})"
            )
        if self.qk_rope_head_dim % 2:
            raise CloudMatrixError(f"qk_rope_head_dim={self.qk_rope_head_dim} must be even")
