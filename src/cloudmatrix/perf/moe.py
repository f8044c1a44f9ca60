"""The MoE block of one layer on one die: router, dispatch, routed experts, shared experts, combine.

The MoE group is EP x MoE-TP dies sharing one copy of the experts. With MoE TP = t > 1 each
expert's intermediate dimension is split over t dies: the t dies all-gather their tokens, each
computes its slice for every copy routed to its EP shard, and a reduce-scatter sums the slices
back onto the tokens' own dies.

Expert-parallel synchronisation: every dispatch/combine and the expert stage wait for the busiest
die. The load statistics are taken at this microbatch's tokens (fewer tokens, more skew): the hot
die's routed rows and its receive (dispatch) / send (combine) volume are the mean's times the
expected max/mean over the EP group (`perf/expert_load.py`). Per-die expert time is affine in its
rows, so scaling the rows by E[max]/mean gives the expected maximum of the per-die time.

Weights read: only the experts expected to receive at least one token this microbatch.
Vector work, where real stacks run separate kernels (prefill): quantising tokens before dispatch,
permuting received copies into expert order, SwiGLU, and the weighted combine sum. In decode the
fused dispatch/combine kernels (CloudMatrix-Infer FusedDispatch/FusedCombine, DeepEP low-latency)
quantise and reduce inside the communication kernel; SwiGLU is still its own kernel. Where the chip's
grouped-GEMM curve was fitted to whole MoE-op measurements (NVIDIA: TensorRT-LLM's fused MoE op), the
permutation and SwiGLU are inside that fit and are not costed again (`moe_op_fitted`).
"""

from __future__ import annotations

from cloudmatrix.perf import comm
from cloudmatrix.perf.attention import group_tokens_everywhere
from cloudmatrix.perf.context import ACT_BYTES, DieContext, present, swiglu_shapes
from cloudmatrix.perf.expert_load import uniform_distinct_per_die
from cloudmatrix.perf.op import OpCost, comm_op
from cloudmatrix.specs.hardware import BYTES_PER_ELEMENT

NVFP4_BYTES_PER_ELEMENT = 0.5 + 1 / 16  # E2M1 values + one FP8 scale per 16 (NVFP4 block)


def dispatch_bytes_per_copy(c: DieContext, prefill: bool = False) -> float:
    """One token's hidden state as sent to one expert die. TensorRT-LLM's prefill with NVFP4 experts quantises
    the tokens to NVFP4 before they leave the die (CutlassFusedMoE: fp4_quantize, then the all-gather or MNNVL
    all-to-all of the FP4 tensor and its scales); decode keeps the DeepEP low-latency kernels' FP8, the format
    its fit was measured in."""
    h = c.model.hidden
    p = c.dep.precision.dispatch
    if prefill and c.dep.backend == "trtllm" and c.dep.precision.experts == "fp4":
        return h * NVFP4_BYTES_PER_ELEMENT
    if p == "int8":
        return h + 512.0  # paper §4.2.1: 7,168 B of INT8 + 512 B scale/metadata = 7.5 KB per token
    if p == "fp8":
        return h + 4.0 * h / 128  # DeepEP: one fp32 scale per 128 channels (7,392 B for DeepSeek-V3)
    return h * BYTES_PER_ELEMENT[p]


def expert_stats(c: DieContext, group_tokens: float) -> tuple[float, float]:
    """(imbalance, distinct experts per die) for one microbatch of `group_tokens` tokens over the group."""
    m, dep = c.model, c.dep
    if dep.expert_load is not None:
        return dep.expert_load.imbalance(group_tokens), dep.expert_load.distinct_per_die(group_tokens)
    slots = dep.slots_per_routed_die(m)
    total = m.routed_experts + dep.redundant_experts
    return dep.imbalance, uniform_distinct_per_die(slots, total, m.top_k, group_tokens)


def moe_ops(c: DieContext, tokens: float, phase: str) -> tuple[list[OpCost], dict]:
    """The MoE block for `tokens` tokens on this die (one microbatch). Returns the ops and the per-die
    expert loads for reports."""
    m, dep = c.model, c.dep
    h = m.hidden
    ep, tp = dep.ep_degree, dep.moe_tp
    group_tokens = tokens * dep.moe_group_dies
    imbalance, distinct = expert_stats(c, group_tokens)
    mean_rows = group_tokens * m.top_k / dep.routed_dies  # routed copies per expert die (each on 1/tp of I)
    hot_rows = mean_rows * imbalance
    inter = m.moe_intermediate / tp
    prefill = phase == "prefill"
    disp_b = dispatch_bytes_per_copy(c, prefill)
    copies = m.top_k + (1 if dep.shared_expert_dies else 0)
    # the attention TP group is the MoE group and its all-reduce (`attention._tp_exit`) left the group's tokens
    # on every die: no gather, no dispatch, one all-reduce at the end; prefill MLA (SP -> TP -> SP) ends on
    # the die's own tokens and gathers / dispatches as usual
    gathered = group_tokens_everywhere(c, phase)
    all_gather = not gathered and ep > 1 and _gathers_over_ep(c, prefill)
    g = dep.attn_tp if gathered else tp  # dies whose tokens each die holds (and over which shared experts split)
    send_tokens = tokens * g  # after the MoE-TP all-gather each die dispatches its TP group's tokens

    # the router runs on the tokens the die holds (all of the group's, replicated, when gathered)
    ops = [c.matmul("router", "moe", send_tokens if gathered else tokens, [(h, m.routed_experts)], "head")]
    if tp > 1 and not gathered:
        ops.append(c.collective("all_gather", tokens * h * ACT_BYTES, tp, "moe_tp_all_gather", "moe"))
    if prefill and BYTES_PER_ELEMENT[dep.precision.dispatch] < ACT_BYTES and ep > 1 and not gathered:
        ops.append(c.vector("dispatch_quant", "moe", send_tokens * h, ACT_BYTES + disp_b / h))
    if all_gather:
        ops.append(c.collective("all_gather", send_tokens * disp_b, ep, "dispatch", "moe"))
    elif not gathered:
        ops.append(_all_to_all(c, "dispatch", send_tokens, copies, disp_b, prefill, imbalance))
    whole_op = moe_op_fitted(c)
    if prefill and not whole_op:
        # gather the received copies into expert-contiguous rows (read + write each copy)
        ops.append(c.vector("token_permute", "moe", hot_rows * h, 2 * disp_b / h))
    # the distinct tokens the die's MoE op takes in: all it holds when gathered, else those dispatched to it
    # (a token reaches a die once if any of its top-k experts lives there)
    if gathered or all_gather:
        tokens_in = send_tokens * (ep if all_gather else 1)
    else:
        tokens_in = group_tokens * comm.hit_probability(dep.routed_dies, m.top_k)
    routed = c.grouped("routed_experts", hot_rows, distinct, swiglu_shapes(h, inter), tokens_in * imbalance)
    swiglu = None if whole_op else _swiglu(c, "routed_swiglu", hot_rows, inter)
    if dep.shared_expert_dies:
        shared_rows = group_tokens * m.shared_experts / dep.shared_expert_dies
        shared_inter = m.moe_intermediate * m.shared_experts
        shared = c.matmul("shared_expert_dies", "moe", shared_rows, swiglu_shapes(h, shared_inter), "experts")
        shared_sw = _swiglu(c, "shared_swiglu", shared_rows, shared_inter)
        # the expert stage lasts as long as its slowest die: routed or shared
        if routed.time + (swiglu.time if swiglu else 0.0) >= shared.time + shared_sw.time:
            ops += [routed, swiglu]
        else:
            ops += [shared, shared_sw]
    else:
        shared_rows = send_tokens
        ops += [routed, swiglu]
        if m.shared_experts:
            shared_inter = m.moe_intermediate * m.shared_experts / g
            aux = [
                c.matmul("shared_experts", "moe", send_tokens, swiglu_shapes(h, shared_inter), "experts"),
                _swiglu(c, "shared_swiglu", send_tokens, shared_inter),
            ]
    comb_b = h * BYTES_PER_ELEMENT[dep.precision.combine]
    if all_gather:
        # each die's partial outputs for every gathered token, summed back onto the tokens' own dies
        ops.append(c.collective("reduce_scatter", send_tokens * ACT_BYTES * h, ep, "combine", "moe"))
    elif not gathered:
        ops.append(_all_to_all(c, "combine", send_tokens, copies, comb_b, prefill, imbalance))
    if not dep.shared_expert_dies and m.shared_experts:
        if not prefill and c.chip.efficiency.shared_experts_aux_stream and c.stream_share is None:
            aux = [_on_aux_stream(present(*ops), aux)]
        ops += aux
    if gathered:
        # each die's weighted partial sums over the experts it holds, summed and kept on every die
        ops.append(c.collective("all_reduce", tokens * g * h * ACT_BYTES, g, "moe_all_reduce", "moe"))
        return present(*ops), _loads(dep, m, hot_rows, mean_rows, distinct, imbalance, shared_rows)
    if prefill and not all_gather:  # the all-gather path's fused MoE op sums its experts' outputs (its finalize)
        # weighted sum of each token's top-k expert outputs (+ shared), read BF16, write BF16
        ops.append(_combine_sum(c, send_tokens * h, (copies + 1) * ACT_BYTES))
    if tp > 1:
        ops.append(c.collective("reduce_scatter", tokens * h * ACT_BYTES, tp, "moe_tp_reduce_scatter", "moe"))
    return present(*ops), _loads(dep, m, hot_rows, mean_rows, distinct, imbalance, shared_rows)


def _gathers_over_ep(c: DieContext, prefill: bool) -> bool:
    """TensorRT-LLM's attention-DP prefill on a node without multi-node NVLink (HGX): its CutlassFusedMoE has no
    all-to-all there; it all-gathers the quantised tokens over the EP group, runs the fused MoE op on all of them
    and reduce-scatters the outputs (NCCL; `fused_moe_cutlass.py`, `allgather` / `reducescatter`). On an MNNVL
    domain (NVL72: the NVLink domain spans nodes) it runs its MNNVL all-to-all instead. Decode keeps the
    low-latency all-to-all fit (DeepEP LL), the only decode EP kernel measured on these planes."""
    s = c.system.spec
    return prefill and c.dep.backend == "trtllm" and (s.scale_up.domain_chips or 0) <= s.chips_per_node


def _on_aux_stream(main: list[OpCost], aux: list[OpCost]) -> OpCost:
    """The shared experts as the stack runs them in a CUDA-graphed decode step: on an auxiliary stream, beside
    the routed path (router, dispatch, grouped GEMM, combine) that the main stream runs meanwhile (TensorRT-LLM
    Deepseekv3MoE with its aux stream; SGLang forward_normal_dual_stream; vLLM's shared-experts stream). The pair
    lasts as long as the longer path, and at least as long as the two together take to stream their bytes
    through the die's one HBM. Returned as one op holding only the time the aux path adds to the main path."""
    main_t = sum(op.time for op in main)
    aux_t = sum(op.time for op in aux)
    hbm = sum(op.memory_time for op in (*main, *aux) if op.kind != "comm")
    exposed = max(main_t, aux_t, hbm) - main_t
    return OpCost(
        "shared_experts",
        "moe",
        1,
        sum(op.flops for op in aux),
        sum(op.bytes for op in aux),
        exposed,
        0.0,
        0.0,
        sum(op.limit_time for op in aux),
        "compute",
        0.0,
    )


def _loads(dep, m, hot_rows, mean_rows, distinct, imbalance, shared_rows) -> dict:
    return {
        "routed_rows_per_die": hot_rows,
        "mean_routed_rows_per_die": mean_rows,
        "routed_slots_per_die": dep.slots_per_routed_die(m),
        "experts_hit_per_die": distinct,
        "imbalance": imbalance,
        "shared_rows_per_die": shared_rows,
    }


def moe_op_fitted(c: DieContext) -> bool:
    """Whether the chip's grouped-GEMM curve was fitted to whole MoE-op measurements (a `[grouped_gemm]`
    table: aiconfigurator's moe_perf rows time TensorRT-LLM's fused MoE op, routing, token permutation, both
    grouped GEMMs, the activation and the un-permute). Its latency and efficiency then already hold the
    permutation and SwiGLU kernels, which must not be costed again. Without the table (the 910C) the grouped
    GEMM is the plain GEMM curve and those kernels are costed as vector ops."""
    eff = c.chip.efficiency
    return eff.grouped_gemm is not None or bool(eff.grouped_gemm_by_precision)


def _swiglu(c: DieContext, name: str, rows: float, inter: float) -> OpCost:
    """SiLU(gate) * up: read the two BF16 halves, write the down-projection's input (quantised with it)."""
    out = min(ACT_BYTES, BYTES_PER_ELEMENT[c.dtype("experts")])
    return c.vector(name, "moe", rows * inter, 2 * ACT_BYTES + out)


def _combine_sum(c: DieContext, elements: float, bytes_per_element: float) -> OpCost:
    """The combine sum as its own kernel class, a gather-reduce: each token's expert rows gathered from where the
    combine left them, weighted and summed (FP32 accumulation) at the chip's `vector_reduce` HBM fraction, which
    defaults to `vector` (the 910C's is measured, specs/catalog/hardware/ascend-910c.toml)."""
    return c.vector("combine_sum", "moe", elements, bytes_per_element, fraction=c.chip.efficiency.vector_reduce)


def _all_to_all(
    c: DieContext, op: str, tokens: float, copies: float, nbytes: float, prefill: bool, imbalance: float
) -> OpCost:
    """EP dispatch or combine. Prefill runs the throughput kernels (DeepEP normal: their own efficiencies
    where the plane gives them) and, on a group spanning nodes over the scale-out plane, forwards through
    the node; decode sends each copy directly (low-latency kernels)."""
    ep = c.dep.ep_degree
    fabric = comm.fabric_for_group(c.system, ep)
    if prefill and fabric is c.system.spec.scale_out:
        t, lim = comm.hierarchical_ep_all_to_all(c.system, ep, tokens, copies, nbytes, op, imbalance)
    else:
        t, lim = comm.ep_all_to_all(c.system, ep, tokens, copies, nbytes, op, hot_factor=imbalance, prefill=prefill)
    return comm_op(op, "moe", 1, tokens * copies * nbytes, t, lim)
