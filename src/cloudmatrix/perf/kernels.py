"""How long one kernel takes on one die: GEMM, grouped GEMM (MoE), MLA attention, memory/vector ops, collectives.

Every kernel is a roofline with a few calibrated physical parameters (the chip file's [efficiency]
table, fitted by benchmarks/calibrate/ from kernel-level measurements; docs/calibration.md):

    time = latency + max(flops / (peak[dtype] * eff), bytes / (hbm_bandwidth * memory_eff))

GEMM efficiency saturates with the rows (tokens), the output columns and the reduction depth:

    eff(m, n, k) = peak_eff * m / (m + half_rows) * n / (n + half_n) * k / (k + half_k)

`half_rows` and `half_n` are tile/wave-quantisation effects (a 64- or 128-wide tile is paid for even
when few rows or columns fill it, and few output tiles leave SMs idle), `half_k` the prologue/epilogue
a short reduction cannot amortise. A grouped GEMM (MoE experts) uses the rows per expert as m. The
formula lives once, in `_gemm_launches`. Plain float math only: the step model calls these hundreds
of times per step.
"""

from __future__ import annotations

import math
from dataclasses import replace

from cloudmatrix.perf import comm
from cloudmatrix.perf.op import OpCost, comm_op, compute_op
from cloudmatrix.specs.hardware import BYTES_PER_ELEMENT, ChipSpec, GemmEfficiency, System

ACT_BYTES = 2.0  # activations between kernels stay BF16
# The low-latency MoE curves (TensorRT-LLM's TRTLLM-Gen path) are fitted to rows of <= 1,024 tokens
# (benchmarks/calibrate/run.py LOW_LATENCY_MAX_TOKENS): 32 rows per expert at DeepSeek's 8 of 256 experts. Beyond
# that the curve is not a measurement (extrapolated, it ran GB200 EP4 prefill at 0.66x the table's fastest kernel).
LOW_LATENCY_MAX_ROWS_PER_EXPERT = 32.0
COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")


def gemm_params(chip: ChipSpec, dtype: str) -> GemmEfficiency:
    """The GEMM efficiency curve for `dtype`: its own fit where the chip file has one, else the default."""
    eff = chip.efficiency
    return eff.gemm_by_precision.get(dtype) or eff.gemm_default


def gemm(
    m: float,
    n: float,
    k: float,
    dtype: str,
    chip: ChipSpec,
    *,
    name: str = "gemm",
    stream: str = "attn",
    weight_copies: float = 1.0,
) -> OpCost:
    """One (m x k) @ (k x n) GEMM at `dtype` (W8A8 when 8-bit: the input is quantised too), BF16 output.
    `weight_copies` > 1 reads the weight that many times (several experts' weights behind one launch)."""
    return gemms(m, ((k, n),), dtype, chip, name=name, stream=stream, weight_copies=weight_copies)


def gemms(
    m: float,
    shapes,
    dtype: str,
    chip: ChipSpec,
    *,
    name: str = "gemm",
    stream: str = "attn",
    weight_copies: float = 1.0,
    p: GemmEfficiency | None = None,
) -> OpCost:
    """Several GEMMs over the same m rows, shapes = ((k, n), ...), reported as one op: one launch per shape,
    each at its own n's and k's efficiency. `p` overrides the efficiency curve."""
    return _gemm_launches(m, m, shapes, weight_copies, dtype, chip, p or gemm_params(chip, dtype), name, stream)


def grouped_gemm(
    rows: float,
    experts: float,
    shapes,
    dtype: str,
    chip: ChipSpec,
    *,
    name: str = "grouped_gemm",
    stream: str = "moe",
    token_elements: float = 0.0,
) -> OpCost:
    """MoE experts as grouped GEMMs: `rows` token copies spread over `experts` experts whose weights are read
    (pass the expected number of experts that receive tokens, not the slots held), shapes = ((k, n), ...)
    per expert. The efficiency curve is the chip's grouped-GEMM fit for `dtype` with rows per expert as m (or its
    low-latency kernel's fit where the chip has one and it is faster). `token_elements`: tokens the MoE op takes
    in x hidden size; a curve fitted to whole MoE ops adds their pass over them (`token_bytes` each, at HBM rate)."""
    if rows <= 0 or experts <= 0:
        return OpCost(name, stream, 1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    eff = chip.efficiency
    p = eff.grouped_gemm_by_precision.get(dtype) or eff.grouped_gemm or gemm_params(chip, dtype)
    op = _with_token_pass(_gemm_launches(rows / experts, rows, shapes, experts, dtype, chip, p, name, stream), p,
                          token_elements, chip)  # fmt: skip
    fast = eff.grouped_gemm_low_latency_by_precision.get(dtype)
    if fast is not None and rows / experts <= LOW_LATENCY_MAX_ROWS_PER_EXPERT:
        # the stack's second MoE kernel (TensorRT-LLM's TRTLLM-Gen path): it runs whichever is faster at this size
        alt = _gemm_launches(rows / experts, rows, shapes, experts, dtype, chip, fast, name, stream)
        alt = _with_token_pass(alt, fast, token_elements, chip)
        if alt.time < op.time:
            return alt
    return op


def _with_token_pass(op: OpCost, p: GemmEfficiency, token_elements: float, chip: ChipSpec) -> OpCost:
    """The MoE op's routing / permutation / finalize pass over the tokens it takes in, after its GEMMs (own
    kernels, serial with them): token_elements x token_bytes at the die's HBM rate."""
    if p.token_bytes <= 0 or token_elements <= 0:
        return op
    nbytes = token_elements * p.token_bytes
    t = nbytes / chip.die.hbm_bandwidth
    return replace(op, bytes=op.bytes + nbytes, compute_time=op.compute_time + t, memory_time=op.memory_time + t,
                   limit_time=op.limit_time + t)  # fmt: skip


def _gemm_launches(
    m_eff: float, rows: float, shapes, weight_copies: float, dtype: str, chip: ChipSpec, p: GemmEfficiency, name, stream
) -> OpCost:
    """One launch per (k, n) shape over `rows` rows; `m_eff` rows set the efficiency (rows per expert when
    grouped); each weight is read `weight_copies` times. Inlined float math: the step model calls this a lot."""
    if rows <= 0:
        return OpCost(name, stream, 1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    peak = chip.peak(dtype)
    wb = BYTES_PER_ELEMENT[dtype]
    in_b = wb if wb <= 1 else ACT_BYTES  # W8A8 and below: the input is quantised too
    e_rows = p.peak * (m_eff / (m_eff + p.half_rows) if p.half_rows > 0 else 1.0)
    hn, hk = p.half_n, p.half_k
    flops = compute = params = act = 0.0
    for k, n in shapes:
        e = e_rows
        if hn > 0:
            e *= n / (n + hn)
        if hk > 0:
            e *= k / (k + hk)
        f = 2.0 * rows * k * n
        flops += f
        compute += f / (peak * e)
        params += k * n
        act += k * in_b + n * ACT_BYTES
    nbytes = params * weight_copies * wb + act * rows
    bw = chip.die.hbm_bandwidth
    eff = chip.efficiency
    lat = p.latency if p.latency is not None else eff.kernel_latency
    return OpCost(
        name,
        stream,
        1,
        flops,
        nbytes,
        compute,
        nbytes / (bw * eff.memory),
        0.0,
        max(flops / peak, nbytes / bw),
        "compute",
        lat * len(shapes),
    )


def mla_decode(
    tokens: float,
    seqs: float,
    context: float,
    heads: float,
    kv_lora_rank: float,
    rope_dim: float,
    dtype: str,
    kv_dtype: str,
    chip: ChipSpec,
    *,
    name: str = "attention_core",
    stream: str = "attn",
) -> OpCost:
    """Absorbed MLA decode core (FlashMLA-style) for `heads` heads on this die: every query token attends over
    the latent (kv_lora + rope) key and aggregates latent values; each sequence's cache is read once for all
    its heads and MTP tokens."""
    flops = 2.0 * tokens * heads * context * (2 * kv_lora_rank + rope_dim)
    nbytes = seqs * context * (kv_lora_rank + rope_dim) * BYTES_PER_ELEMENT[kv_dtype]
    eff = chip.efficiency
    op = _roofline(
        name, stream, flops, nbytes, chip, dtype, eff.attention_compute, eff.attention_memory, eff.attention_latency
    )
    if eff.attention_decode_serial:
        # the kernel loads each KV tile, then computes on it: time = compute + memory. Carried as fixed time so that
        # on a share of the cores only the compute slows (loads keep the die's HBM rate, as OpCost.time_with_share
        # assumes for memory); exact while compute >= memory, as in absorbed-MLA decode at 128 heads
        lat = op.latency + min(op.compute_time, op.memory_time)
        op = OpCost(
            name, stream, 1, flops, nbytes, op.compute_time, op.memory_time, 0.0, op.limit_time, "compute", lat
        )  # (not dataclasses.replace: the step model calls this per context, replace costs half the kernel)
    return op


def mla_prefill(
    tokens: float,
    mean_context: float,
    heads: float,
    qk_head_dim: float,
    v_head_dim: float,
    dtype: str,
    chip: ChipSpec,
    *,
    name: str = "attention_core",
    stream: str = "attn",
) -> OpCost:
    """Non-absorbed MLA prefill core (multi-head attention with qk_head_dim keys, v_head_dim values) for `heads`
    heads on this die; `mean_context` is the mean keys each query sees ((prompt + 1) / 2 when causal). Its
    efficiency saturates with that context (short prompts leave the attention tiles part-empty)."""
    flops = 2.0 * tokens * heads * mean_context * (qk_head_dim + v_head_dim)
    nbytes = tokens * heads * (2 * qk_head_dim + 2 * v_head_dim) * ACT_BYTES  # q, k, v in; o out
    eff = chip.efficiency
    ceff = eff.attention_prefill
    if eff.attention_prefill_half_context > 0:
        ceff *= mean_context / (mean_context + eff.attention_prefill_half_context)
    return _roofline(
        name, stream, flops, nbytes, chip, dtype, ceff, eff.attention_memory, eff.attention_prefill_latency
    )


def memory_op(nbytes: float, chip: ChipSpec, *, name: str = "memory", stream: str = "attn") -> OpCost:
    """A kernel bound by streaming `nbytes` through HBM (norms, residual adds, copies)."""
    eff = chip.efficiency
    bw = chip.die.hbm_bandwidth
    return OpCost(
        name, stream, 1, 0.0, nbytes, 0.0, nbytes / (bw * eff.memory), 0.0, nbytes / bw, "compute", eff.kernel_latency
    )


def vector_op(
    elements: float,
    bytes_per_element: float,
    chip: ChipSpec,
    *,
    name: str = "vector",
    stream: str = "attn",
    fraction: float | None = None,
) -> OpCost:
    """An element-wise vector kernel (quantise, SwiGLU, RoPE, permute) moving `bytes_per_element` bytes of HBM
    traffic (reads + writes) per element, at the chip's vector-kernel HBM fraction (`fraction`: another class's,
    e.g. `vector_reduce` for gather-reduce kernels)."""
    eff = chip.efficiency
    bw = chip.die.hbm_bandwidth
    nbytes = elements * bytes_per_element
    frac = eff.vector if fraction is None else fraction
    return OpCost(
        name, stream, 1, 0.0, nbytes, 0.0, nbytes / (bw * frac), 0.0, nbytes / bw, "compute", eff.vector_latency
    )


def collective(
    kind: str, nbytes: float, ranks: int, system: System, *, name: str | None = None, stream: str = "attn"
) -> OpCost:
    """A plain (NCCL-style) collective over the plane the group of `ranks` dies sits on. `nbytes` is what one
    rank holds: its tensor for an all-reduce, its shard for an all-gather (input) or reduce-scatter (output),
    its send buffer for an all-to-all. Per rank the link carries: all-gather / reduce-scatter (n-1) shards;
    all-to-all (n-1)/n of the buffer; all-reduce 2 (n-1)/n of the tensor (ring), (n-1)/n when the switch
    reduces. (NCCL's tests, and aiconfigurator's tables, count an all-gather by its gathered output = n shards.)

        t = collective_latency + steps * collective_sync_per_log2_rank + volume / (die link rate * collective_eff)

    steps = log2(ranks), twice that for a ring all-reduce (reduce-scatter, then all-gather).

    Planes without fitted collective parameters fall back to the EP kernels' latency, sync and combine efficiency.
    Where the plane has a custom all-reduce kernel (the serving stack's one-shot/two-shot kernel for small TP
    tensors), an all-reduce costs the faster of the two, as the stacks pick it by size. Per-backend kernels come
    in through `System.for_backend`, resolved once per deployment (perf/context.py), not here per call.
    """
    if kind not in COLLECTIVES:
        raise ValueError(f"unknown collective {kind!r}; one of {COLLECTIVES}")
    name = name or kind
    if ranks <= 1 or nbytes <= 0:
        return comm_op(name, stream, 1, 0.0, 0.0, 0.0)
    fabric = comm.fabric_for_group(system, ranks)
    bw = comm.die_bandwidth(system, fabric)
    twice = kind == "all_reduce" and not fabric.in_switch_reduction
    if kind in ("all_gather", "reduce_scatter"):
        volume = nbytes * (ranks - 1)
    else:
        volume = nbytes * (ranks - 1) / ranks * (2.0 if twice else 1.0)
    steps = (2 if twice else 1) * math.log2(ranks)
    if fabric.collective_latency is not None:
        lat = fabric.collective_latency + steps * fabric.collective_sync_per_log2_rank
    else:
        lat = fabric.latency + steps * fabric.sync_per_log2_rank
    eff = fabric.collective_efficiency if fabric.collective_efficiency is not None else fabric.combine_efficiency
    t = lat + volume / (bw * eff)
    cmax = fabric.custom_all_reduce_max_ranks
    if kind == "all_reduce" and fabric.custom_all_reduce_latency is not None and (cmax is None or ranks <= cmax):
        # the serving stack's own all-reduce kernel (ring volume and steps); the stack takes it where it is faster
        ring = 2.0 * math.log2(ranks)
        custom = (
            fabric.custom_all_reduce_latency
            + ring * fabric.custom_all_reduce_sync_per_log2_rank
            + 2.0 * nbytes * (ranks - 1) / ranks / (bw * fabric.custom_all_reduce_efficiency)
        )
        t = min(t, custom)
    return comm_op(name, stream, 1, volume, t, volume / bw)


def _roofline(
    name: str,
    stream: str,
    flops: float,
    nbytes: float,
    chip: ChipSpec,
    dtype: str,
    ceff: float,
    meff: float,
    latency: float,
) -> OpCost:
    return compute_op(name, stream, 1, flops, nbytes, chip.peak(dtype), ceff, chip.die.hbm_bandwidth, meff, latency)
