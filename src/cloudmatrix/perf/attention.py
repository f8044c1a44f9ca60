"""Attention ops of one layer on one die: MLA absorbed (decode), MLA naive with SP -> TP -> SP (prefill), GQA.

Attention TP (`attn_tp` = t) splits the heads over t dies; the t dies of a TP group share their
tokens, so each die runs its heads for the group's t x tokens rows. MLA's latent KV is shared by
all heads, so every die of the group reads the whole group's cache (TP does not shard MLA's KV).
Leaving TP: a dense model all-reduces the o_proj output; a MoE model reduce-scatters it (each
die keeps its own tokens for the experts) and all-gathers the next layer's input.
Vector work is costed where the kernels are separate: norms and residual adds, RoPE, and the
per-token quantisation of each quantised matmul's input (the decode MLA prolog fuses norm, RoPE
and quantisation into one kernel on the 910C, paper §4.2.2, so decode adds only the epilog's).
"""

from __future__ import annotations

from cloudmatrix.perf import kernels
from cloudmatrix.perf.context import ACT_BYTES, DieContext, present
from cloudmatrix.perf.op import OpCost, compute_op
from cloudmatrix.specs.hardware import BYTES_PER_ELEMENT
from cloudmatrix.specs.model import ModelSpec

# Per token and layer, two RMSNorms (read + write) and two residual adds (2 reads + 1 write), BF16:
# (2 * 2 + 2 * 3) hidden-size vectors.
NORM_RESIDUAL_VECTORS = 10
ROPE_BYTES_PER_ELEMENT = 2 * ACT_BYTES  # read and write each rotated element


def _norms(c: DieContext, tokens: float) -> OpCost:
    return c.vector("norms_residual", "attn", tokens * c.model.hidden, NORM_RESIDUAL_VECTORS * ACT_BYTES)


def _norms_unless_fused(c: DieContext, tokens: float) -> list[OpCost]:
    """The layer's norms and residual adds, unless both of its TP all-reduces (after attention, after the MoE or
    FFN: `group_tokens_everywhere`) carry them: a stack with `allreduce_norm_fusion` (TensorRT-LLM's decoder
    layer fuses each all-reduce with the residual add and the next RMSNorm, PRE_/POST_MOE_FUSION whenever attention
    is TP) then runs no norm kernel of its own."""
    eff = c.chip.efficiency
    if eff.allreduce_norm_fusion and c.dep.attn_tp > 1 and group_tokens_everywhere(c, "decode"):
        return []
    return [_norms(c, tokens)]


def group_tokens_everywhere(c: DieContext, phase: str) -> bool:
    """Attention TP and MoE TP over the same dies, outside an SP prefill MLA (which ends its SP -> TP -> SP on
    the die's own tokens): every layer ends in an all-reduce (attention, MoE, dense FFN), so every die of the
    group holds the group's tokens and nothing is gathered (TP attention + TP MoE as SGLang/TRT-LLM run them)."""
    sp = phase == "prefill" and c.model.attention == "mla" and c.chip.efficiency.prefill_attention_sp
    return c.dep.tp_groups_shared and not sp


def _tp_entry(c: DieContext, tokens: float) -> list[OpCost]:
    """MoE model under attention TP: gather the group's tokens before the projections (unless the previous
    layer's all-reduce left them on every die: `group_tokens_everywhere`)."""
    tp = c.dep.attn_tp
    if tp <= 1 or not c.model.is_moe or c.dep.tp_groups_shared:
        return []
    return [c.collective("all_gather", tokens * c.model.hidden * ACT_BYTES, tp, "attn_tp_all_gather", "attn")]


def _tp_exit(c: DieContext, tokens: float) -> list[OpCost]:
    """Sum the heads' partial o_proj outputs: reduce-scatter back to this die's tokens (MoE model) or
    all-reduce (dense model, whose FFN is tensor-parallel too; MoE model whose MoE TP group is this group)."""
    tp = c.dep.attn_tp
    if tp <= 1:
        return []
    h = c.model.hidden
    if c.model.is_moe and not c.dep.tp_groups_shared:
        return [c.collective("reduce_scatter", tokens * h * ACT_BYTES, tp, "attn_tp_reduce_scatter", "attn")]
    # dense model, or MoE TP over the same dies: every die keeps the group's summed output (the MoE TP group's
    # input, so MoE skips its all-gather; a dense layer of a MoE model uses its own tokens' rows of it)
    return [c.collective("all_reduce", tokens * tp * h * ACT_BYTES, tp, "attn_all_reduce", "attn")]


def mla_decode_ops(c: DieContext, tokens: float, seqs: float, context: float) -> list[OpCost]:
    """Decode MLA: fused prolog (q down/up, kv down, W_UK folded into q), latent attention, W_UV + o_proj."""
    before, after = mla_decode_parts(c, tokens)
    return [*before, mla_decode_core(c, tokens, seqs, context), *after]


def mla_decode_core(c: DieContext, tokens: float, seqs: float, context: float) -> OpCost:
    """The latent attention over the KV cache: the only decode attention op that depends on the context."""
    tp = c.dep.attn_tp
    return mla_decode_attention(c, tokens * tp, seqs * tp, context, c.model.heads / tp, _block_scale(c))


def mla_decode_attention(
    c: DieContext, rows: float, seqs: float, context: float, heads: float, latency_scale: float = 1.0
) -> OpCost:
    """The latent attention for `rows` query tokens of `seqs` sequences over `heads` heads on this die."""
    m = c.model
    op = kernels.mla_decode(
        rows, seqs, context, heads, m.kv_lora_rank, m.qk_rope_head_dim, c.dep.precision.attention,
        c.dep.precision.kv_cache, c.chip,
    )  # fmt: skip
    return _with_latency(op, op.latency * latency_scale) if latency_scale != 1.0 else op


def mla_decode_parts(c: DieContext, tokens: float) -> tuple[list[OpCost], list[OpCost]]:
    """The decode MLA ops before and after the attention core (independent of the context length)."""
    tp = c.dep.attn_tp
    prolog, quant, epilog = mla_decode_projections(c, tokens * tp, c.model.heads / tp, _block_scale(c))
    before = [*_tp_entry(c, tokens), *_norms_unless_fused(c, tokens), prolog]
    after = present(quant, epilog, *_tp_exit(c, tokens))
    return before, after


def mla_decode_projections(
    c: DieContext, rows: float, heads: float, latency_scale: float = 1.0
) -> tuple[OpCost, OpCost | None, OpCost]:
    """(prolog, o_proj input quantisation or None, epilog) of the decode MLA block for `rows` tokens over `heads`
    heads: q down/up, kv down and W_UK folded into q; W_UV and o_proj."""
    m = c.model
    h = m.hidden
    q = [(h, m.q_lora_rank), (m.q_lora_rank, heads * m.q_head_dim)] if m.q_lora_rank else [(h, heads * m.q_head_dim)]
    kv_a = [(h, m.kv_lora_rank + m.qk_rope_head_dim)]
    # W_UK (per head nope -> latent) and W_UV (per head latent -> v) are batched over the heads: written as
    # one GEMM of the per-head depth k and all heads' outputs n, which has the FLOPs, weight bytes and tile
    # count of the batch (the per-head inputs are read once per head: its extra activation bytes are not counted)
    w_uk = [(m.qk_nope_head_dim, heads * m.kv_lora_rank)]
    w_uv = [(m.kv_lora_rank, heads * m.v_head_dim)]
    o = [(heads * m.v_head_dim, h)]
    ops = (
        c.matmul("mla_prolog", "attn", rows, q + kv_a + w_uk, "attn_proj"),
        c.quantise("o_proj_quant", "attn", rows * heads * m.kv_lora_rank, "attn_proj"),
        c.matmul("mla_epilog_o_proj", "attn", rows, w_uv + o, "attn_proj"),
    )
    if latency_scale == 1.0:
        return ops
    return tuple(None if op is None else _with_latency(op, op.latency * latency_scale) for op in ops)


def _block_scale(c: DieContext) -> float:
    """Where the stack's MLA module table fitted the decode block's fixed cost (`mla_decode_block_latency`, all
    the block's kernels together: projections, latent norms, RoPE and KV append, attention and its split-KV
    combine, quantisation), the factor that scales the block's per-kernel latencies to sum to it; else 1."""
    eff = c.chip.efficiency
    dtype = c.dtype("attn_proj")
    block = eff.mla_decode_block_latency.get(dtype)
    if block is None:
        return 1.0
    key = (id(c.chip), dtype, c.dep.precision.attention, c.model.name)
    hit = _BLOCK_SCALE.get(key)
    if hit is not None and hit[1] is c.chip:  # the step model calls this per context: computed once per chip
        return hit[0]
    prolog, quant, epilog = mla_decode_projections(c, 1.0, 1.0)
    own = prolog.latency + epilog.latency + (quant.latency if quant else 0.0) + eff.attention_latency
    scale = block / own if own > 0 else 1.0
    _BLOCK_SCALE[key] = (scale, c.chip)
    return scale


_BLOCK_SCALE: dict[tuple, tuple[float, object]] = {}


def _with_latency(op: OpCost, latency: float) -> OpCost:
    return OpCost(
        op.name, op.stream, op.count, op.flops, op.bytes, op.compute_time, op.memory_time, op.comm_time,
        op.limit_time, op.kind, latency,
    )  # fmt: skip


def mla_prefill_ops(c: DieContext, tokens: float, prompt_len: float) -> list[OpCost]:
    """Prefill MLA as multi-head attention (no absorption), staged SP -> TP -> SP when attn_tp > 1
    (paper §4.3.1): down-projections and o_proj on this die's tokens with full weights, an all-gather
    of the compressed q/kv, up-projections and attention for heads/tp over the group's tokens, and an
    all-to-all of the head outputs back to the tokens' own dies. FLOPs per die do not depend on tp."""
    m = c.model
    tp = c.dep.attn_tp
    if tp > 1 and not c.chip.efficiency.prefill_attention_sp:
        return mla_prefill_tp_ops(c, tokens, prompt_len)
    h, heads = m.hidden, m.heads / tp
    rows = tokens * tp
    q_in = m.q_lora_rank or h
    down = ([(h, m.q_lora_rank)] if m.q_lora_rank else []) + [(h, m.kv_lora_rank + m.qk_rope_head_dim)]
    up = [(m.q_lora_rank, heads * m.q_head_dim)] if m.q_lora_rank else [(h, heads * m.q_head_dim)]
    up += [(m.kv_lora_rank, heads * (m.qk_nope_head_dim + m.v_head_dim))]
    o = [(m.heads * m.v_head_dim, h)]
    ops = present(
        _norms(c, tokens),
        c.quantise("down_proj_quant", "attn", tokens * h, "attn_proj"),
        c.matmul("mla_down_proj", "attn", tokens, down, "attn_proj"),
    )
    if tp > 1:
        latent = tokens * (q_in + m.kv_lora_rank + m.qk_rope_head_dim) * ACT_BYTES
        ops.append(c.collective("all_gather", latent, tp, "sp_to_tp_all_gather", "moe"))
    # latent norms (q and kv) and RoPE on the query and key rope parts
    latent_norm = rows * ((m.q_lora_rank or 0) + m.kv_lora_rank)
    rope = rows * (heads + 1) * m.qk_rope_head_dim
    ops += present(
        c.quantise("up_proj_quant", "attn", rows * ((m.q_lora_rank or 0) + m.kv_lora_rank), "attn_proj"),
        c.matmul("mla_up_proj", "attn", rows, up, "attn_proj"),
        c.vector("rope_latent_norm", "attn", latent_norm + rope, ROPE_BYTES_PER_ELEMENT),
        kernels.mla_prefill(
            rows, (prompt_len + 1) / 2, heads, m.q_head_dim, m.v_head_dim, c.dep.precision.attention, c.chip
        ),
    )
    if tp > 1:
        heads_out = tokens * m.heads * m.v_head_dim * ACT_BYTES
        ops.append(c.collective("all_to_all", heads_out, tp, "tp_to_sp_all_to_all", "moe"))
    ops += present(
        c.quantise("o_proj_quant", "attn", tokens * m.heads * m.v_head_dim, "attn_proj"),
        c.matmul("o_proj", "attn", tokens, o, "attn_proj"),
    )
    return _prefill_block(c, ops)


def _prefill_block(c: DieContext, ops: list[OpCost]) -> list[OpCost]:
    """Where the stack's MLA context-module table fitted the prefill block's fixed cost (`mla_prefill_block_latency`),
    the block's kernels (all but the input norm and the collectives) have their latencies scaled to sum to it."""
    block = c.chip.efficiency.mla_prefill_block_latency.get(c.dtype("attn_proj"))
    if block is None:
        return ops
    own = sum(op.latency for op in ops if op.kind != "comm" and op.name != "norms_residual")
    if own <= 0:
        return ops
    f = block / own
    return [op if op.kind == "comm" or op.name == "norms_residual" else _with_latency(op, op.latency * f) for op in ops]


def mla_prefill_tp_ops(c: DieContext, tokens: float, prompt_len: float) -> list[OpCost]:
    """Prefill MLA under plain attention TP (TensorRT-LLM, SGLang, vLLM): every die of the TP group holds the
    group's tokens (gathered first unless the previous layer's all-reduce left them there), runs the
    down-projections on all of them with full weights, the up-projections, attention and o_proj for its heads/tp,
    and sums the partial o_proj outputs (`_tp_exit`). FLOPs per die of the replicated parts grow with tp."""
    m = c.model
    tp = c.dep.attn_tp
    h, heads = m.hidden, m.heads / tp
    rows = tokens * tp
    down = ([(h, m.q_lora_rank)] if m.q_lora_rank else []) + [(h, m.kv_lora_rank + m.qk_rope_head_dim)]
    up = [(m.q_lora_rank, heads * m.q_head_dim)] if m.q_lora_rank else [(h, heads * m.q_head_dim)]
    up += [(m.kv_lora_rank, heads * (m.qk_nope_head_dim + m.v_head_dim))]
    latent_norm = rows * ((m.q_lora_rank or 0) + m.kv_lora_rank)
    rope = rows * (heads + 1) * m.qk_rope_head_dim
    ops = present(
        *_tp_entry(c, tokens),
        # prefill's all-reduces are large (NCCL in the stacks' size rule): the norm stays its own kernel
        _norms(c, rows),
        c.quantise("down_proj_quant", "attn", rows * h, "attn_proj"),
        c.matmul("mla_down_proj", "attn", rows, down, "attn_proj"),
        c.quantise("up_proj_quant", "attn", rows * ((m.q_lora_rank or 0) + m.kv_lora_rank), "attn_proj"),
        c.matmul("mla_up_proj", "attn", rows, up, "attn_proj"),
        c.vector("rope_latent_norm", "attn", latent_norm + rope, ROPE_BYTES_PER_ELEMENT),
        kernels.mla_prefill(
            rows, (prompt_len + 1) / 2, heads, m.q_head_dim, m.v_head_dim, c.dep.precision.attention, c.chip
        ),
        c.quantise("o_proj_quant", "attn", rows * heads * m.v_head_dim, "attn_proj"),
        c.matmul("o_proj", "attn", rows, [(heads * m.v_head_dim, h)], "attn_proj"),
        *_tp_exit(c, tokens),
    )
    return _prefill_block(c, ops)


def gqa_ops(c: DieContext, tokens: float, seqs: float, context: float, causal_prefill: bool) -> list[OpCost]:
    """GQA/MHA attention with heads split over attn_tp dies (KV heads split too, or replicated when there are
    fewer KV heads than dies)."""
    m = c.model
    tp = c.dep.attn_tp
    rows = tokens * tp  # a TP group shares its tokens; each die computes 1/tp of the heads
    kv_heads = m.kv_heads / tp if m.kv_heads >= tp else 1
    qkv = [(m.hidden, (m.heads / tp + 2 * kv_heads) * m.head_dim)]
    o = [(m.heads * m.head_dim / tp, m.hidden)]
    ctx = (context + 1) / 2 if causal_prefill else context
    flops = 2.0 * rows * (m.heads / tp) * ctx * 2 * m.head_dim
    if causal_prefill:
        kv = rows * (m.heads / tp) * 4 * m.head_dim * ACT_BYTES
    else:
        kv = seqs * tp * context * 2 * kv_heads * m.head_dim * BYTES_PER_ELEMENT[c.dep.precision.kv_cache]
    eff = c.chip.efficiency
    core = compute_op(
        "attention_core",
        "attn",
        1,
        flops,
        kv,
        c.chip.peak(c.dep.precision.attention),
        eff.attention_prefill if causal_prefill else eff.attention_compute,
        c.chip.die.hbm_bandwidth,
        eff.attention_memory,
        eff.kernel_latency,
    )
    return present(
        *_tp_entry(c, tokens),
        _norms(c, tokens),
        c.quantise("qkv_quant", "attn", rows * m.hidden, "attn_proj"),
        c.matmul("qkv_proj", "attn", rows, qkv, "attn_proj"),
        c.vector("rope", "attn", rows * (m.heads / tp + kv_heads) * m.head_dim, ROPE_BYTES_PER_ELEMENT),
        core,
        c.quantise("o_proj_quant", "attn", rows * m.heads / tp * m.head_dim, "attn_proj"),
        c.matmul("o_proj", "attn", rows, o, "attn_proj"),
        *_tp_exit(c, tokens),
    )


def attention_params_per_die(model: ModelSpec, tp: int, phase: str = "decode") -> float:
    """Attention weights one die holds under attention TP. MLA: the down-projections (q_a, kv_a and their
    norms) are replicated; the per-head up-projections (q_b, kv_b) are split; o_proj is split in decode
    (TP) and replicated in prefill (SP -> TP -> SP runs o_proj on the die's own tokens). GQA: all split,
    KV heads replicated when fewer than the dies."""
    if tp <= 1:
        return float(model.attention_params())
    h = model.hidden
    if model.attention == "mla":
        r = model.q_lora_rank
        qd = model.heads * model.q_head_dim
        down = (h * r + r if r else 0) + h * (model.kv_lora_rank + model.qk_rope_head_dim) + model.kv_lora_rank
        q_up = r * qd if r else h * qd
        kv_b = model.kv_lora_rank * model.heads * (model.qk_nope_head_dim + model.v_head_dim)
        o = model.heads * model.v_head_dim * h
        return down + (q_up + kv_b) / tp + (o if phase == "prefill" else o / tp)
    kv_heads = model.kv_heads / tp if model.kv_heads >= tp else 1
    q = h * model.heads * model.head_dim / tp
    kv = 2 * h * kv_heads * model.head_dim
    o = model.heads * model.head_dim * h / tp
    return q + kv + o
