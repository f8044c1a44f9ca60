"""Does a deployment fit? HBM per die: weights + KV cache + EP buffers + activation workspace."""

from __future__ import annotations

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf.attention import attention_params_per_die
from cloudmatrix.perf.context import ACT_BYTES
from cloudmatrix.perf.deployment import Deployment
from cloudmatrix.specs.hardware import BYTES_PER_ELEMENT, System
from cloudmatrix.specs.model import ModelSpec

# Activations in flight per token (residual, normed input, attention output, expert in/out,
# double-buffered): 8 hidden-size BF16 vectors. An assumption; small next to weights and KV.
WORKSPACE_VECTORS_PER_TOKEN = 8


def weight_bytes_per_die(model: ModelSpec, dep: Deployment, phase: str = "decode") -> float:
    """Weights one die holds, each op class at its own precision: attention (replicated over attention DP,
    per-head parts split over attention TP), dense FFN (split over TP in a dense model or with shared TP
    groups), its expert slots (split over MoE TP), embeddings, head and router, and the MTP module."""
    p = dep.precision
    b = {k: BYTES_PER_ELEMENT[getattr(p, k)] for k in ("attn_proj", "experts", "dense_ffn", "head")}
    attn = attention_params_per_die(model, dep.attn_tp, phase)
    # the dense FFN is TP over the attention TP group in a dense model, and in a MoE model whose MoE TP shares
    # those dies (outside prefill MLA: attention.group_tokens_everywhere)
    group_tp = dep.tp_groups_shared and not (phase == "prefill" and model.attention == "mla")
    ffn_tp = dep.attn_tp if not model.is_moe or group_tp else 1
    layers = model.layers + model.mtp_layers
    total = layers * attn * b["attn_proj"]
    total += (model.layers - model.moe_layers) * model.dense_ffn_params() / ffn_tp * b["dense_ffn"]
    if model.is_moe:
        moe_layers = model.moe_layers + model.mtp_layers
        slots = dep.slots_per_routed_die(model)
        shared = model.shared_experts if dep.shared_expert_dies == 0 else 0
        # shared experts split like the routed ones (MoE TP), or over the whole group when it holds every token
        shared_tp = dep.attn_tp if group_tp else dep.moe_tp
        total += moe_layers * (slots / dep.moe_tp + shared / shared_tp) * model.expert_params() * b["experts"]
        total += moe_layers * model.router_params() * b["head"]
    elif model.mtp_layers:
        total += model.mtp_layers * model.dense_ffn_params() / ffn_tp * b["dense_ffn"]
    total += (model.embedding_params() + model.lm_head_params()) * b["head"]  # a tied head adds nothing
    total += model.mtp_layers * 2 * model.hidden * model.hidden * b["attn_proj"]  # eh_proj
    return total


def ep_buffer_bytes(model: ModelSpec, dep: Deployment, max_tokens_per_die: float, dispatch_bytes: float) -> float:
    """Statically allocated dispatch/combine buffers: ranks x max tokens x message size (paper §4.2.1:
    ~645 MiB per die at EP320 and 96 tokens)."""
    if not model.is_moe or dep.ep_degree <= 1:
        return 0.0
    combine = model.hidden * BYTES_PER_ELEMENT[dep.precision.combine]
    return dep.ep_degree * max_tokens_per_die * (dispatch_bytes + combine)


def memory_per_die(
    model: ModelSpec,
    dep: Deployment,
    kv_tokens_per_die: float,
    tokens_in_flight_per_die: float,
    dispatch_bytes: float,
    phase: str = "decode",
) -> dict[str, float]:
    """HBM per die by use. `kv_tokens_per_die` is the die's mean share; under attention TP a die holds the
    KV of its whole TP group's sequences: all of it for MLA (one latent shared by every head), its share of
    the KV heads for GQA."""
    kv_layers = model.layers + dep.mtp_depth * (1 if model.mtp_layers else 0)
    kv_per_token = kv_layers * model.kv_elements_per_token_per_layer() * BYTES_PER_ELEMENT[dep.precision.kv_cache]
    tp = dep.attn_tp
    if tp > 1:
        kv_per_token *= tp / (min(tp, model.kv_heads) if model.attention == "gqa" else 1)
    return {
        "weights": _weights(model, dep, phase),
        "kv_cache": kv_tokens_per_die * kv_per_token,
        "ep_buffers": ep_buffer_bytes(model, dep, tokens_in_flight_per_die, dispatch_bytes),
        "workspace": tokens_in_flight_per_die * WORKSPACE_VECTORS_PER_TOKEN * model.hidden * ACT_BYTES,
    }


_WEIGHTS: dict[tuple[int, object, str], tuple[float, object]] = {}


def _weights(model: ModelSpec, dep: Deployment, phase: str) -> float:
    """weight_bytes_per_die, remembered per (model, deployment, phase): it is the same for every step."""
    key = (id(model), dep, phase)
    hit = _WEIGHTS.get(key)
    if hit is None:
        if len(_WEIGHTS) > 4096:
            _WEIGHTS.clear()
        hit = _WEIGHTS[key] = (weight_bytes_per_die(model, dep, phase), model)  # holding model pins its id
    return hit[0]


def usable_hbm(system: System, dep: Deployment) -> float:
    return system.chip.die.hbm_capacity * (1 - dep.hbm_reserve)


def check_fit(memory: dict[str, float], system: System, dep: Deployment, what: str) -> None:
    need = sum(memory.values())
    have = usable_hbm(system, dep)
    if need > have:
        parts = ", ".join(f"{k} {v / 1e9:.1f} GB" for k, v in memory.items())
        raise CloudMatrixError(
            f"{what} does not fit: it needs {need / 1e9:.1f} GB per die ({parts}) but a {system.chip.name} die has "
            f"{have / 1e9:.1f} GB usable ({system.chip.die.hbm_capacity / 1e9:.0f} GB less {dep.hbm_reserve:.0%} "
            f"reserve), {(need - have) / 1e9:.1f} GB too much; lower the batch per die or the KV length, use an "
            f"INT8 KV cache or INT8 weights, or spread the experts over more dies (higher EP)"
        )


def kv_capacity_tokens_per_die(
    model: ModelSpec, system: System, dep: Deployment, tokens_in_flight_per_die: float, dispatch_bytes: float
) -> float:
    """KV tokens one die can hold once weights, EP buffers and workspace are placed."""
    fixed = memory_per_die(model, dep, 0.0, tokens_in_flight_per_die, dispatch_bytes)
    one = memory_per_die(model, dep, 1.0, tokens_in_flight_per_die, dispatch_bytes)["kv_cache"]
    free = usable_hbm(system, dep) - sum(fixed.values())
    if free <= 0:
        parts = ", ".join(f"{k} {v / 1e9:.1f} GB" for k, v in fixed.items())
        raise CloudMatrixError(
            f"no HBM left for the KV cache on a {system.chip.name} die: {parts} already exceed the "
            f"{usable_hbm(system, dep) / 1e9:.1f} GB usable; use more EP dies, INT8 weights or a smaller batch"
        )
    return free / one
