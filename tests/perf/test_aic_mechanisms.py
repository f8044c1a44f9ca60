"""The stack mechanisms fitted or read from aiconfigurator's tables (docs/calibration.md, "The twin against
aiconfigurator's op tables"): shared experts on an auxiliary stream, the stack's faster MoE kernel, and the
decode MLA block's fixed cost from the module table. Each test checks the mechanism's own arithmetic."""

import pytest

from cloudmatrix.perf import kernels
from cloudmatrix.perf.attention import mla_decode_core, mla_decode_parts
from cloudmatrix.perf.context import DieContext
from cloudmatrix.perf.decode import decode_step
from cloudmatrix.perf.deployment import build_deployment
from cloudmatrix.perf.moe import _on_aux_stream
from cloudmatrix.perf.op import OpCost, comm_op
from cloudmatrix.perf.prefill import prefill_step
from cloudmatrix.specs.hardware import GemmEfficiency, System, load_system
from cloudmatrix.specs.model import load_model

R1 = load_model("deepseek-r1")


def _op(name, compute=0.0, memory=0.0, latency=0.0):
    return OpCost(name, "moe", 1, 1.0, 1.0, compute, memory, 0.0, 0.0, "compute", latency)


def _with_efficiency(system: System, **update) -> System:
    eff = system.chip.efficiency.model_copy(update=update)
    return System(system.spec, system.chip.model_copy(update={"efficiency": eff}), system.source)


def _tep8(backend=None, system=None):
    return build_deployment(
        R1, dies=8, ep=8, attn_tp=8, precision="fp8", backend=backend, shared_expert_dies=0, redundant_experts=0,
        system=system,
    )  # fmt: skip


def test_aux_stream_adds_only_what_outlasts_the_routed_path():
    main = [_op("router", compute=3e-6), comm_op("dispatch", "moe", 1, 0.0, 4e-6, 0.0), _op("routed", compute=5e-6)]
    assert _on_aux_stream(main, [_op("shared", compute=7e-6)]).time == pytest.approx(0.0)
    assert _on_aux_stream(main, [_op("shared", compute=15e-6)]).time == pytest.approx(3e-6)
    # both streams read HBM: the pair lasts at least the two memory times together (comm is not HBM time here)
    heavy = [_op("routed", memory=10e-6)]
    assert _on_aux_stream(heavy, [_op("shared", memory=6e-6)]).time == pytest.approx(6e-6)


def test_decode_on_an_aux_stream_stack_hides_the_shared_experts_and_prefill_does_not():
    b200 = load_system("hgx-b200")
    off = _with_efficiency(b200.for_backend("trtllm"), shared_experts_aux_stream=False)
    dep = _tep8(None)
    on_rows = {r.name: r for r in decode_step(R1, b200, _tep8("trtllm"), 0.5, 1536).rows if r.group == "moe_layer"}
    off_step = decode_step(R1, off, dep, 0.5, 1536)
    off_rows = {r.name: r for r in off_step.rows if r.group == "moe_layer"}
    assert "shared_swiglu" in off_rows and "shared_swiglu" not in on_rows
    serial = off_rows["shared_experts"].time + off_rows["shared_swiglu"].time
    assert on_rows["shared_experts"].time < 0.5 * serial
    assert "shared_swiglu" in {r.name for r in prefill_step(R1, b200, _tep8("trtllm"), 1024, 8192).rows}


def test_the_moe_op_takes_the_faster_of_the_stacks_two_kernels():
    chip = load_system("hgx-b200").chip
    shapes = ((7168, 4096), (2048, 7168))
    base = kernels.grouped_gemm(32, 32, shapes, "fp4", chip)
    eff = chip.efficiency
    slow = GemmEfficiency(peak=0.01, latency=50e-6)
    fast = GemmEfficiency(peak=0.9, latency=1e-6)
    for curve, expect_faster in ((slow, False), (fast, True)):
        c = chip.model_copy(
            update={"efficiency": eff.model_copy(update={"grouped_gemm_low_latency_by_precision": {"fp4": curve}})}
        )
        t = kernels.grouped_gemm(32, 32, shapes, "fp4", c).time
        assert (t < base.time) is expect_faster
        if not expect_faster:
            assert t == pytest.approx(base.time)


def test_the_low_latency_moe_curve_competes_only_inside_its_fitted_range():
    chip = load_system("hgx-b200").chip
    shapes = ((7168, 4096), (2048, 7168))
    eff = chip.efficiency
    fast = GemmEfficiency(peak=0.9, latency=1e-6)
    c = chip.model_copy(
        update={"efficiency": eff.model_copy(update={"grouped_gemm_low_latency_by_precision": {"fp4": fast}})}
    )
    cap = kernels.LOW_LATENCY_MAX_ROWS_PER_EXPERT
    for per_expert, uses_fast in ((cap, True), (2 * cap, False)):
        rows = per_expert * 64
        base = kernels.grouped_gemm(rows, 64, shapes, "fp4", chip).time
        t = kernels.grouped_gemm(rows, 64, shapes, "fp4", c).time
        assert (t < base) is uses_fast
        if not uses_fast:  # beyond the rows it was fitted to, the curve is an extrapolation: the table kernel's
            assert t == pytest.approx(base)


def test_the_decode_mla_blocks_kernel_latencies_sum_to_the_module_fit():
    b200 = load_system("hgx-b200").for_backend("trtllm")
    sums = {}
    for block in (None, 40e-6, 80e-6):
        s = _with_efficiency(
            b200, mla_decode_block_latency={} if block is None else {"fp8": block}, allreduce_norm_fusion=False
        )
        c = DieContext(R1, s, _tep8(None))
        before, after = mla_decode_parts(c, 2.0)
        block_ops = [op for op in (*before, *after) if op.name in ("mla_prolog", "o_proj_quant", "mla_epilog_o_proj")]
        block_ops.append(mla_decode_core(c, 2.0, 2.0, 4096))
        sums[block] = sum(op.latency for op in block_ops)
        if block is not None:
            assert sums[block] == pytest.approx(block, rel=1e-9)
        # the norms and the all-reduce are outside the module: untouched
        assert {op.latency for op in before if op.name == "norms_residual"} == {s.chip.efficiency.vector_latency}
    assert sums[None] != pytest.approx(40e-6)  # without the fit: each kernel's own latency


def test_the_fitted_b200_file_gives_each_stack_its_own_mechanisms():
    b200 = load_system("hgx-b200")
    assert not b200.chip.efficiency.shared_experts_aux_stream  # no stack named: the per-kernel model
    for backend in ("trtllm", "sglang", "vllm"):
        assert b200.for_backend(backend).chip.efficiency.shared_experts_aux_stream
    assert b200.for_backend("trtllm").chip.efficiency.mla_decode_block_latency
    assert not b200.for_backend("sglang").chip.efficiency.mla_decode_block_latency  # no SGLang module table
    assert "fp4" in b200.for_backend("trtllm").chip.efficiency.grouped_gemm_low_latency_by_precision
    # TRTLLM-Gen's fp8 block-scale MoE (transferred from SGLang's table: TensorRT-LLM's holds only DeepGEMM)
    assert "fp8" in b200.for_backend("trtllm").chip.efficiency.grouped_gemm_low_latency_by_precision
    assert not load_system("hgx-h200").for_backend("trtllm").chip.efficiency.grouped_gemm_low_latency_by_precision
    assert not b200.for_backend("sglang").chip.efficiency.grouped_gemm_low_latency_by_precision


def test_gb200_tensorrt_llm_all_reduce_keeps_its_mnnvl_kernel_across_two_trays():
    # GB200's table stops at 4 GPUs; the MNNVL kernels measured on GB300 NVL72 (same fabric) span 8 and 16
    from cloudmatrix.perf.kernels import collective

    gb200 = load_system("gb200-nvl72")
    up = gb200.spec.scale_up
    assert up.custom_all_reduce_max_ranks >= 8
    assert up.backend["sglang"].custom_all_reduce_max_ranks == 4  # SGLang's IPC kernel: measured to stop at 4
    nbytes = 4 * 7168 * 2.0
    custom = collective("all_reduce", nbytes, 8, gb200).time
    nccl = collective("all_reduce", nbytes, 8, gb200.for_backend("sglang")).time
    assert custom < 0.5 * nccl


def test_norms_fold_into_the_tp_all_reduces_only_where_the_stack_fuses_them():
    b200 = load_system("hgx-b200")
    fused = _with_efficiency(b200.for_backend("trtllm"), allreduce_norm_fusion=True)
    plain = _with_efficiency(b200.for_backend("trtllm"), allreduce_norm_fusion=False)

    def names(system, dep):
        return {r.name for r in decode_step(R1, system, dep, 2.0, 2048).rows}

    tep8 = _tep8(None)
    assert "norms_residual" not in names(fused, tep8) and "attn_all_reduce" in names(fused, tep8)
    assert "norms_residual" in names(plain, tep8)
    # attention DP (no TP all-reduce to carry them): the norms stay
    dep8 = build_deployment(R1, dies=8, ep=8, precision="fp8", shared_expert_dies=0, redundant_experts=0)
    assert "norms_residual" in names(fused, dep8)
    fast, slow = decode_step(R1, fused, tep8, 2.0, 2048), decode_step(R1, plain, tep8, 2.0, 2048)
    norms = sum(r.time for r in slow.rows if r.name == "norms_residual")
    assert slow.step_time - fast.step_time == pytest.approx(norms, rel=1e-6)


def test_prefill_mla_under_tp_runs_as_the_nvidia_stacks_run_it():
    b200 = load_system("hgx-b200").for_backend("trtllm")
    sp = _with_efficiency(b200, prefill_attention_sp=True)
    tp = _with_efficiency(b200, prefill_attention_sp=False)
    dep = _tep8(None)

    def rows(system):
        return {r.name: r for r in prefill_step(R1, system, dep, 512, 4096).rows if r.group == "moe_layer"}

    a, b = rows(sp), rows(tp)
    assert {"sp_to_tp_all_gather", "tp_to_sp_all_to_all", "dispatch", "combine"} <= set(a)
    assert "sp_to_tp_all_gather" not in b and {"attn_all_reduce", "moe_all_reduce"} <= set(b)
    assert "dispatch" not in b  # the all-reduce left every token on every die: the experts need no dispatch
    # the down-projections run replicated on the group's tokens: 8x the FLOPs of the SP die's own tokens
    assert b["mla_down_proj"].flops == pytest.approx(8 * a["mla_down_proj"].flops, rel=1e-9)
    # the attention core is split by heads either way: the same work per die
    assert b["attention_core"].flops == pytest.approx(a["attention_core"].flops, rel=1e-9)


def test_the_prefill_mla_blocks_kernel_latencies_sum_to_the_context_module_fit():
    from cloudmatrix.perf.attention import mla_prefill_ops

    b200 = load_system("hgx-b200").for_backend("trtllm")
    for sp in (True, False):
        s = _with_efficiency(b200, mla_prefill_block_latency={"fp8": 50e-6}, prefill_attention_sp=sp)
        ops = mla_prefill_ops(DieContext(R1, s, _tep8(None)), 512, 4096)
        block = [op for op in ops if op.kind != "comm" and op.name != "norms_residual"]
        assert sum(op.latency for op in block) == pytest.approx(50e-6, rel=1e-9)
        comm = [op for op in ops if op.kind == "comm"]
        assert comm and all(op.comm_time > 0 for op in comm)  # the collectives keep their own costs
