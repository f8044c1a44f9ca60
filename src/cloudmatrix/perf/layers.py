"""The ops of one transformer layer on one die, for a given number of tokens.

Each builder returns OpCosts for ONE run on ONE die; the step builders
(`decode.py`, `prefill.py`) decide token counts, repetition and overlap.
Matmuls run at the weight precision (W8A8 when int8: activations are
quantised per token, so the INT8 peak applies); the attention core at the
attention precision; the router and LM head in BF16.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudmatrix.perf import comm, kernels
from cloudmatrix.perf.deployment import Deployment
from cloudmatrix.perf.op import OpCost, comm_op, compute_op
from cloudmatrix.specs.hardware import BYTES_PER_ELEMENT, System
from cloudmatrix.specs.model import ModelSpec

ACT_BYTES = 2.0  # activations between ops stay BF16
# Per token and layer, two RMSNorms (read + write) and two residual adds (2 reads + 1 write), BF16:
# (2 * 2 + 2 * 3) hidden-size vectors of 2 bytes.
_NORM_RESIDUAL_BYTES_PER_HIDDEN = 10 * ACT_BYTES


@dataclass(frozen=True)
class DieContext:
    """Everything an op builder needs, resolved once per step."""

    model: ModelSpec
    system: System
    dep: Deployment

    @property
    def chip(self):
        return self.system.chip

    def matmul(
        self,
        name: str,
        stream: str,
        rows: float,
        shapes: list[tuple[float, float]],
        weight_copies: float = 1.0,
        precision: str | None = None,
    ) -> OpCost:
        """rows x (K x N) GEMMs, fused into one op: reads every weight once (x `weight_copies`: a grouped
        GEMM reads each of its experts), the inputs (quantised when the weights are 8-bit or less) and
        writes BF16 outputs."""
        prec = precision or self.dep.precision.weights
        return kernels.gemms(rows, shapes, prec, self.chip, name=name, stream=stream, weight_copies=weight_copies)

    def attention(self, flops: float, nbytes: float) -> OpCost:
        """The attention core at the attention precision, with the chip's attention-kernel efficiencies."""
        eff = self.chip.efficiency
        return compute_op(
            "attention_core",
            "attn",
            1,
            flops,
            nbytes,
            self.chip.peak(self.dep.precision.attention),
            eff.attention_compute,
            self.chip.die.hbm_bandwidth,
            eff.attention_memory,
        )

    def elementwise(self, name: str, stream: str, nbytes: float) -> OpCost:
        """Memory-bound vector work (norms, residual adds, activation functions)."""
        return compute_op(
            name,
            stream,
            1,
            0.0,
            nbytes,
            self.chip.peak("bf16"),
            1.0,
            self.chip.die.hbm_bandwidth,
            self.chip.efficiency.memory,
        )


# ------------------------------------------------------------------ attention


def mla_absorbed_ops(c: DieContext, tokens: float, seqs: float, context: float) -> list[OpCost]:
    """Decode MLA: fused prolog (q down/up, kv down, W_UK folded into q), latent attention, W_UV + o_proj."""
    m = c.model
    h, heads = m.hidden, m.heads
    q = [(h, m.q_lora_rank), (m.q_lora_rank, heads * m.q_head_dim)] if m.q_lora_rank else [(h, heads * m.q_head_dim)]
    kv_a = [(h, m.kv_lora_rank + m.qk_rope_head_dim)]
    w_uk = [(heads * m.qk_nope_head_dim, m.kv_lora_rank)]  # per head nope -> latent; fused as one batched GEMM
    w_uv = [(heads * m.kv_lora_rank, m.v_head_dim)]
    o = [(heads * m.v_head_dim, h)]
    # every query token attends over the latent (kv_lora) + rope key, and aggregates latent values
    flops = 2.0 * tokens * m.heads * context * (2 * m.kv_lora_rank + m.qk_rope_head_dim)
    # the cache is read once per sequence, shared by its MTP tokens and all heads
    kv = seqs * context * (m.kv_lora_rank + m.qk_rope_head_dim) * BYTES_PER_ELEMENT[c.dep.precision.kv_cache]
    core = c.attention(flops, kv)
    return [
        c.elementwise("norms_residual", "attn", tokens * _NORM_RESIDUAL_BYTES_PER_HIDDEN * h),
        c.matmul("mla_prolog", "attn", tokens, q + kv_a + w_uk),
        core,
        c.matmul("mla_epilog_o_proj", "attn", tokens, w_uv + o),
    ]


def mla_naive_prefill_ops(c: DieContext, tokens: float, prompt_len: float) -> list[OpCost]:
    """Prefill MLA as 128-head MHA (no absorption), staged SP -> TP -> SP when attn_tp > 1.

    FLOPs per die are the same whatever the TP degree (heads/tp for tp times the tokens);
    TP adds an all-gather of the compressed q/kv and an all-to-all of the head outputs.
    """
    m = c.model
    tp = c.dep.attn_tp
    h, heads = m.hidden, m.heads
    down = ([(h, m.q_lora_rank)] if m.q_lora_rank else []) + [(h, m.kv_lora_rank + m.qk_rope_head_dim)]
    # the up-projections run for tokens*tp rows but only heads/tp of the weights
    up = [(m.q_lora_rank, heads * m.q_head_dim / tp)] if m.q_lora_rank else [(h, heads * m.q_head_dim / tp)]
    up += [(m.kv_lora_rank, heads * (m.qk_nope_head_dim + m.v_head_dim) / tp)]
    o = [(heads * m.v_head_dim, h)]
    ops = [
        c.elementwise("norms_residual", "attn", tokens * _NORM_RESIDUAL_BYTES_PER_HIDDEN * h),
        c.matmul("mla_down_proj", "attn", tokens, down),
    ]
    if tp > 1:
        latent = tokens * ((m.q_lora_rank or m.hidden) + m.kv_lora_rank + m.qk_rope_head_dim) * ACT_BYTES
        t, lim = comm.all_gather(c.system, tp, latent)
        ops.append(comm_op("sp_to_tp_all_gather", "moe", 1, latent * (tp - 1), t, lim))
    ops.append(c.matmul("mla_up_proj", "attn", tokens * tp, up))
    mean_ctx = (prompt_len + 1) / 2  # causal
    flops = 2.0 * tokens * m.heads * mean_ctx * (m.q_head_dim + m.v_head_dim)
    io = tokens * m.heads * (2 * m.q_head_dim + 2 * m.v_head_dim) * ACT_BYTES  # q, k, v in; o out
    ops.append(c.attention(flops, io))
    if tp > 1:
        heads_out = tokens * m.heads * m.v_head_dim * ACT_BYTES
        t, lim = comm.all_to_all(c.system, tp, heads_out)
        ops.append(comm_op("tp_to_sp_all_to_all", "moe", 1, heads_out, t, lim))
    ops.append(c.matmul("o_proj", "attn", tokens, o))
    return ops


def gqa_ops(c: DieContext, tokens: float, seqs: float, context: float, causal_prefill: bool) -> list[OpCost]:
    """GQA/MHA attention with heads split over attn_tp dies (KV heads split too), all-reduce after o_proj."""
    m = c.model
    tp = c.dep.attn_tp
    qkv = [(m.hidden, (m.heads + 2 * m.kv_heads) * m.head_dim / tp)]
    o = [(m.heads * m.head_dim / tp, m.hidden)]
    rows = tokens * tp  # a TP group shares its tokens; each die computes 1/tp of the heads
    ctx = (context + 1) / 2 if causal_prefill else context
    flops = 2.0 * rows * (m.heads / tp) * ctx * 2 * m.head_dim
    kv_elems = 2 * (m.kv_heads / tp if m.kv_heads >= tp else 1) * m.head_dim
    if causal_prefill:
        kv = rows * (m.heads / tp) * 4 * m.head_dim * ACT_BYTES
    else:
        kv = seqs * tp * context * kv_elems * BYTES_PER_ELEMENT[c.dep.precision.kv_cache]
    ops = [
        c.elementwise("norms_residual", "attn", tokens * _NORM_RESIDUAL_BYTES_PER_HIDDEN * m.hidden),
        c.matmul("qkv_proj", "attn", rows, qkv),
        c.attention(flops, kv),
        c.matmul("o_proj", "attn", rows, o),
    ]
    if tp > 1:
        t, lim = comm.all_reduce(c.system, tp, rows * m.hidden * ACT_BYTES)
        ops.append(comm_op("attn_all_reduce", "attn", 1, rows * m.hidden * ACT_BYTES, t, lim))
    return ops


# ------------------------------------------------------------------ FFN


def dispatch_bytes_per_copy(c: DieContext) -> float:
    """One token's hidden state as sent to one expert die."""
    h = c.model.hidden
    p = c.dep.precision.dispatch
    if p == "int8":
        return h + 512.0  # paper §4.2.1: 7,168 B of INT8 + 512 B scale/metadata = 7.5 KB per token
    if p == "fp8":
        return h + 4.0 * h / 128  # DeepEP: one fp32 scale per 128 channels (7,392 B for DeepSeek-V3)
    return h * BYTES_PER_ELEMENT[p]


def moe_ops(c: DieContext, tokens: float, instance_tokens: float) -> tuple[list[OpCost], dict]:
    """Router, dispatch, routed experts (grouped GEMM), shared experts, combine, for one die.

    `tokens` is this die's share; `instance_tokens` all tokens of the instance, which the
    EP group's dies share. Returns the ops and a dict of per-die expert loads for reports.
    """
    m, dep = c.model, c.dep
    ep = dep.ep_degree
    slots = dep.slots_per_routed_die(m)
    routed_copies = instance_tokens * m.top_k / dep.routed_dies * dep.imbalance
    ops = [c.matmul("router", "moe", tokens, [(m.hidden, m.routed_experts)], precision=c.dep.precision.head)]
    copies = m.top_k + (1 if dep.shared_expert_dies else 0)
    t, lim = comm.ep_all_to_all(c.system, ep, tokens, copies, dispatch_bytes_per_copy(c), "dispatch")
    ops.append(comm_op("dispatch", "moe", 1, tokens * copies * dispatch_bytes_per_copy(c), t, lim))
    # grouped GEMM over the die's expert slots: weights of every slot, rows = token copies received
    ffn = _swiglu_shapes(m.hidden, m.moe_intermediate)
    routed = c.matmul("routed_experts", "moe", routed_copies, ffn, weight_copies=slots)
    if dep.shared_expert_dies:
        shared_rows = instance_tokens * m.shared_experts / dep.shared_expert_dies
        shared = c.matmul(
            "shared_expert_dies", "moe", shared_rows, _swiglu_shapes(m.hidden, m.moe_intermediate * m.shared_experts)
        )
        # the expert stage lasts as long as its slowest die: routed or shared
        ops.append(routed if routed.time >= shared.time else shared)
    else:
        shared_rows = tokens
        ops.append(routed)
        if m.shared_experts:
            ops.append(
                c.matmul(
                    "shared_experts", "moe", tokens, _swiglu_shapes(m.hidden, m.moe_intermediate * m.shared_experts)
                )
            )
    comb = tokens * copies * m.hidden * BYTES_PER_ELEMENT[dep.precision.combine]
    t, lim = comm.ep_all_to_all(
        c.system, ep, tokens, copies, m.hidden * BYTES_PER_ELEMENT[dep.precision.combine], "combine"
    )
    ops.append(comm_op("combine", "moe", 1, comb, t, lim))
    loads = {"routed_rows_per_die": routed_copies, "routed_slots_per_die": slots, "shared_rows_per_die": shared_rows}
    return ops, loads


def dense_ffn_ops(c: DieContext, tokens: float, tp: int = 1) -> list[OpCost]:
    m = c.model
    ops = [c.matmul("dense_ffn", "attn", tokens * tp, _swiglu_shapes(m.hidden, m.intermediate / tp))]
    if tp > 1:
        t, lim = comm.all_reduce(c.system, tp, tokens * tp * m.hidden * ACT_BYTES)
        ops.append(comm_op("ffn_all_reduce", "attn", 1, tokens * tp * m.hidden * ACT_BYTES, t, lim))
    return ops


def lm_head_op(c: DieContext, tokens: float, name: str = "lm_head") -> OpCost:
    m = c.model
    return c.matmul(name, "attn", tokens, [(m.hidden, m.vocab)], precision=c.dep.precision.head)


def _swiglu_shapes(hidden: float, inter: float) -> list[tuple[float, float]]:
    """gate and up fused (H -> 2I), then down (I -> H); the SiLU-and-multiply traffic rides in the outputs."""
    return [(hidden, 2 * inter), (inter, hidden)]
