"""Model descriptions read from Hugging Face `config.json` files.

A `ModelSpec` holds the architecture numbers the cost model needs and derives
from them parameter counts per component, KV-cache bytes per token and FLOPs
per token. Supported: decoder-only transformers with MLA (DeepSeek-V2/V3/R1,
Kimi-K2) or GQA/MHA attention (Llama, Qwen), dense or MoE FFNs.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.specs.hardware import BYTES_PER_ELEMENT
from cloudmatrix.user_input import read_text

# model_type values whose architecture we know how to count.
_MLA_TYPES = {"deepseek_v3", "deepseek_v2", "kimi_k2"}
_GQA_TYPES = {"llama", "qwen2", "qwen3", "qwen3_moe", "qwen2_moe", "mixtral", "mistral"}
# configs without model_type are recognised by their first architecture's prefix
_MLA_ARCHS = ("DeepseekV3", "DeepseekV2")
_GQA_ARCHS = ("Llama", "Qwen2", "Qwen3", "Mixtral", "Mistral")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model_type: str
    hidden: int
    layers: int
    vocab: int
    heads: int
    kv_heads: int
    head_dim: int
    attention: str  # "mla" or "gqa"
    # MLA (zero for GQA models)
    q_lora_rank: int | None
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int
    # FFN
    intermediate: int  # dense FFN width
    routed_experts: int  # 0 = dense model
    shared_experts: int
    moe_intermediate: int
    top_k: int
    dense_layers: int  # the first layers with a dense FFN (first_k_dense_replace)
    mtp_layers: int
    tie_embeddings: bool

    # ------------------------------------------------------------ structure
    @property
    def is_moe(self) -> bool:
        return self.routed_experts > 0

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_layers if self.is_moe else 0

    @property
    def q_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim if self.attention == "mla" else self.head_dim

    # ------------------------------------------------------------ parameters
    def attention_params(self) -> int:
        """Parameters of one attention block (projections and their norms, not the input norm)."""
        h = self.hidden
        if self.attention == "mla":
            qd = self.heads * self.q_head_dim
            # with a q LoRA: down-projection, its norm, up-projection; without: one projection
            r = self.q_lora_rank
            q = h * r + r + r * qd if r else h * qd
            kv_a = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
            kv_b = self.kv_lora_rank * self.heads * (self.qk_nope_head_dim + self.v_head_dim)
            o = self.heads * self.v_head_dim * h
            return q + kv_a + kv_b + o
        q = h * self.heads * self.head_dim
        kv = 2 * h * self.kv_heads * self.head_dim
        o = self.heads * self.head_dim * h
        return q + kv + o

    def dense_ffn_params(self) -> int:
        return 3 * self.hidden * self.intermediate  # SwiGLU: gate, up, down

    def expert_params(self) -> int:
        """One routed (or shared) expert."""
        return 3 * self.hidden * self.moe_intermediate

    def router_params(self) -> int:
        return self.hidden * self.routed_experts

    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    def lm_head_params(self) -> int:
        return 0 if self.tie_embeddings else self.vocab * self.hidden

    def _layer_norm_params(self) -> int:
        return 2 * self.hidden

    def mtp_params(self) -> int:
        """One MTP module per depth: enorm, hnorm, eh_proj, one decoder layer (MoE), final norm.
        Embedding and head are shared with the main model (DeepSeek-V3 report §2.2)."""
        if self.mtp_layers == 0:
            return 0
        layer = self.attention_params() + self._layer_norm_params()
        layer += (
            self.routed_experts * self.expert_params()
            + self.shared_experts * self.expert_params()
            + self.router_params()
            if self.is_moe
            else self.dense_ffn_params()
        )
        return self.mtp_layers * (layer + 2 * self.hidden * self.hidden + 3 * self.hidden)

    def components(self) -> dict[str, int]:
        """Parameters by component for the main model (the MTP module listed apart)."""
        moe = self.moe_layers
        dense = self.layers - moe
        return {
            "embedding": self.embedding_params(),
            "attention": self.layers * self.attention_params(),
            "dense_ffn": dense * self.dense_ffn_params(),
            "routed_experts": moe * self.routed_experts * self.expert_params(),
            "shared_experts": moe * self.shared_experts * self.expert_params(),
            "router": moe * self.router_params(),
            "norms": self.layers * self._layer_norm_params() + self.hidden,
            "lm_head": self.lm_head_params(),
            "mtp": self.mtp_params(),
        }

    def total_params(self, include_mtp: bool = False) -> int:
        c = self.components()
        return sum(v for k, v in c.items() if include_mtp or k != "mtp")

    def activated_params(self) -> int:
        """Parameters touched per token (main model): routed experts count top_k of E."""
        c = self.components()
        routed = self.moe_layers * self.top_k * self.expert_params()
        return sum(v for k, v in c.items() if k not in ("routed_experts", "mtp")) + routed

    def weight_bytes(self, precision: str, include_mtp: bool = True) -> float:
        """Weights at `precision`, with norms, router and embeddings kept in BF16 as INT8 serving does."""
        c = self.components()
        if not include_mtp:
            c["mtp"] = 0
        high = c["norms"] + c["router"] + c["embedding"] + c["lm_head"]
        low = sum(c.values()) - high
        return low * _bytes(precision) + high * BYTES_PER_ELEMENT["bf16"]

    # ------------------------------------------------------------ KV cache
    def kv_elements_per_token_per_layer(self) -> int:
        if self.attention == "mla":
            return self.kv_lora_rank + self.qk_rope_head_dim  # latent + shared rope key
        return 2 * self.kv_heads * self.head_dim

    def kv_bytes_per_token(self, precision: str = "bf16") -> float:
        return self.layers * self.kv_elements_per_token_per_layer() * _bytes(precision)

    # ------------------------------------------------------------ FLOPs
    def attention_core_flops(self, context: float, absorbed: bool) -> float:
        """Score + value FLOPs of one token attending to `context` tokens, one layer."""
        if self.attention == "mla" and absorbed:
            return 2 * self.heads * context * (2 * self.kv_lora_rank + self.qk_rope_head_dim)
        per_head = self.q_head_dim + self.v_head_dim if self.attention == "mla" else 2 * self.head_dim
        return 2 * self.heads * context * per_head

    def decode_flops_per_token(self, context: float) -> float:
        """One decode token at `context` cached tokens: matmuls (2 per activated weight) + attention."""
        matmul = 2 * (self.activated_params() - self.embedding_params())
        return matmul + self.layers * self.attention_core_flops(context, absorbed=True)

    def prefill_flops_per_token(self, prompt_len: float) -> float:
        """Mean FLOPs per token of a prompt of `prompt_len` tokens (causal: mean context (L+1)/2)."""
        matmul = 2 * (self.activated_params() - self.embedding_params())
        return matmul + self.layers * self.attention_core_flops((prompt_len + 1) / 2, absorbed=False)


def _bytes(precision: str) -> float:
    try:
        return BYTES_PER_ELEMENT[precision]
    except KeyError:
        raise CloudMatrixError(f"unknown precision {precision!r}; use one of {', '.join(BYTES_PER_ELEMENT)}") from None


# ---------------------------------------------------------------- reading configs


def _catalog_dir() -> Path:
    return Path(str(resources.files("cloudmatrix.specs") / "catalog" / "models"))


def model_names() -> list[str]:
    return sorted(p.stem for p in _catalog_dir().glob("*.json"))


def _get(cfg: dict[str, Any], key: str, path: str, default: Any = ...) -> Any:
    if key in cfg and cfg[key] is not None:
        return cfg[key]
    if default is ...:
        raise CloudMatrixError(f"{path}: config.json has no {key!r}; it is needed for this architecture")
    return default


# Upper bounds far above any published model (DeepSeek-V3: 61 layers, 256 experts; Kimi-K2: 384 experts) that
# keep a typo from hanging a per-layer loop or sizing a per-expert array at terabytes.
_MAX_FIELD = 1 << 40
_MAX_LAYERS = 10_000
_MAX_EXPERTS = 1 << 16
_MAXIMA = {
    "num_hidden_layers": _MAX_LAYERS,
    "num_nextn_predict_layers": _MAX_LAYERS,
    "n_routed_experts": _MAX_EXPERTS,
    "num_local_experts": _MAX_EXPERTS,
    "num_experts": _MAX_EXPERTS,
}


def _int(cfg: dict[str, Any], key: str, path: str, default: Any = ..., minimum: int = 0) -> int:
    """An integer field, checked: a bad value names the file and the field instead of raising deep inside."""
    v = _get(cfg, key, path, default)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or int(v) != v:
        raise CloudMatrixError(f"{path}: {key} = {v!r} is not an integer; fix it in config.json")
    if v < minimum:
        raise CloudMatrixError(f"{path}: {key} = {v} must be at least {minimum}; fix it in config.json")
    maximum = _MAXIMA.get(key, _MAX_FIELD)
    if v > maximum:
        raise CloudMatrixError(f"{path}: {key} = {v} is above the {maximum:,} this tool accepts; fix it in config.json")
    return int(v)


def _bool(cfg: dict[str, Any], key: str, path: str, default: bool) -> bool:
    """A JSON boolean; the string "false" is an error, not true."""
    v = _get(cfg, key, path, default)
    if not isinstance(v, bool):
        raise CloudMatrixError(f"{path}: {key} = {v!r} is not a boolean; write true or false (no quotes)")
    return v


def _attention_kind(cfg: dict[str, Any], path: str) -> str:
    mtype = cfg.get("model_type") or ""
    archs = cfg.get("architectures") or []
    if not isinstance(mtype, str):
        raise CloudMatrixError(f"{path}: model_type = {mtype!r} is not a string; fix it in config.json")
    if not isinstance(archs, list):
        raise CloudMatrixError(f"{path}: architectures = {archs!r} is not a list of class names; fix it")
    first = archs[0] if archs and isinstance(archs[0], str) else ""
    # model_type wins; Kimi-K2 says "kimi_k2" but is a DeepseekV3ForCausalLM, which either test catches
    if mtype in _MLA_TYPES or (mtype not in _GQA_TYPES and first.startswith(_MLA_ARCHS)):
        return "mla"
    if mtype in _GQA_TYPES or (not mtype and first.startswith(_GQA_ARCHS)):
        return "gqa"
    raise CloudMatrixError(
        f"{path}: unsupported architecture model_type={mtype!r} "
        f"({', '.join(map(str, archs)) or 'no architectures'}); "
        f"supported: MLA models ({', '.join(sorted(_MLA_TYPES))}) and GQA/MHA decoders "
        f"({', '.join(sorted(_GQA_TYPES))})"
    )


def _dense_layer_count(cfg: dict[str, Any], layers: int, path: str) -> int:
    """How many layers have a dense FFN in an MoE model.

    Only the count matters for parameters, bytes and FLOPs, so the three ways configs
    spell the layout all reduce to it: DeepSeek's first_k_dense_replace + moe_layer_freq,
    Qwen-MoE's decoder_sparse_step + mlp_only_layers.
    """
    first_k = _int(cfg, "first_k_dense_replace", path, 0)
    if first_k > layers:
        raise CloudMatrixError(f"{path}: first_k_dense_replace={first_k} exceeds num_hidden_layers={layers}")
    freq = _int(cfg, "moe_layer_freq", path, 1, minimum=1)
    step = _int(cfg, "decoder_sparse_step", path, 1, minimum=1)
    mlp_only = _get(cfg, "mlp_only_layers", path, [])
    if not isinstance(mlp_only, list) or not all(isinstance(i, int) and 0 <= i < layers for i in mlp_only):
        raise CloudMatrixError(f"{path}: mlp_only_layers must be a list of layer indices below {layers}")
    only = set(mlp_only)
    moe = sum(
        1 for i in range(layers) if i >= first_k and (i - first_k) % freq == 0 and (i + 1) % step == 0 and i not in only
    )
    return layers - moe


def spec_from_config(cfg: dict[str, Any], name: str, path: str = "config.json") -> ModelSpec:
    """Build a ModelSpec from a parsed Hugging Face config dict."""
    if "text_config" in cfg and "hidden_size" not in cfg:
        cfg = cfg["text_config"]  # multimodal wrappers (e.g. Kimi-K2.5) keep the LM here
        if not isinstance(cfg, dict):
            raise CloudMatrixError(
                f"{path}: text_config is {type(cfg).__name__} {cfg!r:.40}, not an object holding the language "
                "model's config; fix it in config.json"
            )
    attention = _attention_kind(cfg, path)
    mla = attention == "mla"
    i = lambda k, d=..., m=0: _int(cfg, k, path, d, m)  # noqa: E731
    hidden, heads, layers = i("hidden_size", m=1), i("num_attention_heads", m=1), i("num_hidden_layers", m=1)
    kv_heads = heads if mla else i("num_key_value_heads", heads, 1)
    if heads % kv_heads:
        raise CloudMatrixError(
            f"{path}: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}"
        )
    experts = i("n_routed_experts", 0) or i("num_local_experts", 0) or i("num_experts", 0)
    if experts:
        top_k = i("num_experts_per_tok", m=1)
        if top_k > experts:
            raise CloudMatrixError(f"{path}: num_experts_per_tok={top_k} exceeds the {experts} experts")
        moe_inter = i("moe_intermediate_size", 0) or i("intermediate_size", m=1)
        shared = i("n_shared_experts", 0)
        # Qwen2-MoE: one wide shared expert, counted in routed-expert units
        if _get(cfg, "shared_expert_intermediate_size", path, 0) != 0:
            shared = max(1, round(i("shared_expert_intermediate_size") / moe_inter))
        dense_layers = _dense_layer_count(cfg, layers, path)
    else:
        top_k = moe_inter = shared = dense_layers = 0
    intermediate = i("intermediate_size", 0)
    if (not experts or dense_layers) and intermediate == 0:
        raise CloudMatrixError(f"{path}: config.json has no 'intermediate_size'; dense FFN layers need it")
    if not mla and "head_dim" not in cfg and hidden % heads:
        raise CloudMatrixError(
            f"{path}: hidden_size={hidden} is not a multiple of num_attention_heads={heads}; give head_dim"
        )
    return ModelSpec(
        name=name,
        model_type=cfg.get("model_type", "") or "",
        hidden=hidden,
        layers=layers,
        vocab=i("vocab_size", m=1),
        heads=heads,
        kv_heads=kv_heads,
        # Qwen3 sets head_dim explicitly (128, while hidden/heads is 64); older configs leave it implicit
        head_dim=i("v_head_dim", m=1) if mla else i("head_dim", hidden // heads, 1),
        attention=attention,
        q_lora_rank=(i("q_lora_rank", 0) or None) if mla else None,
        kv_lora_rank=i("kv_lora_rank", m=1) if mla else 0,
        qk_nope_head_dim=i("qk_nope_head_dim") if mla else 0,
        qk_rope_head_dim=i("qk_rope_head_dim") if mla else 0,
        v_head_dim=i("v_head_dim", m=1) if mla else 0,
        intermediate=intermediate,
        routed_experts=experts,
        shared_experts=shared,
        moe_intermediate=moe_inter,
        top_k=top_k,
        dense_layers=dense_layers,
        mtp_layers=i("num_nextn_predict_layers", 0),
        tie_embeddings=_bool(cfg, "tie_word_embeddings", path, False),
    )


@cache
def load_model(name_or_path: str) -> ModelSpec:
    """A model from the catalog by name (e.g. "deepseek-r1") or from a config.json path or its folder."""
    p = Path(name_or_path)
    if p.is_dir():
        p = p / "config.json"
    if not p.exists():
        shipped = _catalog_dir() / f"{name_or_path}.json"
        if not shipped.exists():
            raise CloudMatrixError(
                f"unknown model {name_or_path!r}; known: {', '.join(model_names())} "
                "(or give the path of a Hugging Face config.json)"
            )
        p = shipped
    try:
        cfg = json.loads(read_text(p, "model config"))
    except json.JSONDecodeError as e:
        raise CloudMatrixError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CloudMatrixError(f"{p}: expected a JSON object (a Hugging Face config.json)")
    name = p.stem if p.name != "config.json" else p.parent.name
    return spec_from_config(cfg, name, str(p))
