"""Kernel time functions against hand-computed values on a made-up chip (round numbers, no catalog file)."""

import math

import pytest

from cloudmatrix.perf import kernels as K
from cloudmatrix.specs.hardware import ChipSpec, load_system

US = 1e-6


def chip(**eff) -> ChipSpec:
    efficiency = {
        "gemm": 0.8,
        "gemm_half_rows": 64,
        "gemm_half_k": 1024,
        "attention_compute": 0.5,
        "attention_memory": 0.9,
        "memory": 0.8,
        "kernel_latency": 5 * US,
        **eff,
    }
    return ChipSpec.model_validate(
        {
            "name": "toy",
            "vendor": "test",
            "dies": 1,
            "die": {
                "peak": {"bf16": 1e15, "fp8": 2e15},
                "hbm_capacity": 1e11,
                "hbm_bandwidth": 4e12,
            },
            "efficiency": efficiency,
        }
    )


def test_gemm_compute_bound_follows_the_saturating_efficiency():
    c = chip()
    m, n, k = 4096, 8192, 4096
    op = K.gemm(m, n, k, "bf16", c)
    eff = 0.8 * 4096 / (4096 + 64) * 4096 / (4096 + 1024)  # 0.63015...
    assert op.compute_time == pytest.approx(2 * m * n * k / (1e15 * eff))
    bytes_ = m * k * 2 + k * n * 2 + m * n * 2
    assert op.memory_time == pytest.approx(bytes_ / (4e12 * 0.8))
    assert op.time == pytest.approx(5 * US + op.compute_time)
    assert op.bound == "compute"
    assert op.limit_time == pytest.approx(2 * m * n * k / 1e15)


def test_small_m_fp8_gemm_is_memory_bound_with_quantised_input():
    c = chip(kernel_latency=0)
    m, n, k = 4, 7168, 2048
    op = K.gemm(m, n, k, "fp8", c)
    bytes_ = m * k * 1 + k * n * 1 + m * n * 2  # fp8 input and weight, bf16 output
    assert op.bytes == bytes_
    assert op.memory_time == pytest.approx(bytes_ / 3.2e12)
    assert op.bound == "memory"


def test_latency_dominates_a_tiny_kernel():
    op = K.gemm(1, 128, 128, "bf16", chip())
    assert op.bound == "latency"
    assert op.time == pytest.approx(5 * US, rel=0.01)


def test_per_precision_fit_overrides_the_default():
    c = chip(gemm_by_precision={"fp8": {"peak": 0.5, "half_rows": 0, "half_k": 0}})
    op = K.gemm(8192, 8192, 8192, "fp8", c)
    assert op.compute_time == pytest.approx(2 * 8192**3 / (2e15 * 0.5))
    bf = K.gemm(8192, 8192, 8192, "bf16", c)  # no bf16 entry: the default curve
    assert bf.compute_time == pytest.approx(2 * 8192**3 / (1e15 * 0.8 * 8192 / 8256 * 8192 / 9216))


def test_few_output_columns_lower_the_efficiency():
    c = chip(gemm_by_precision={"fp8": {"peak": 0.8, "half_n": 512}})
    wide, narrow = K.gemm(8192, 8192, 8192, "fp8", c), K.gemm(8192, 512, 8192, "fp8", c)
    assert wide.compute_time == pytest.approx(2 * 8192**3 / (2e15 * 0.8 * 8192 / 8704))
    assert narrow.compute_time == pytest.approx(2 * 8192 * 512 * 8192 / (2e15 * 0.4))


def test_prefill_attention_saturates_with_context():
    c = chip(attention_prefill=0.6, attention_prefill_half_context=1000, attention_prefill_latency=20 * US)
    op = K.mla_prefill(1024, 1000, 128, 192, 128, "bf16", c)
    assert op.compute_time == pytest.approx(op.flops / (1e15 * 0.3))
    assert op.latency == pytest.approx(20 * US)


def test_fused_gemms_sum_their_shapes_and_launches():
    c = chip()
    shapes = ((7168, 4096), (2048, 7168))
    both = K.gemms(256, shapes, "bf16", c)
    one = [K.gemm(256, n, k, "bf16", c) for k, n in shapes]
    assert both.compute_time == pytest.approx(sum(o.compute_time for o in one))
    assert both.memory_time == pytest.approx(sum(o.memory_time for o in one))
    assert both.latency == pytest.approx(10 * US)


def test_grouped_gemm_uses_rows_per_expert_and_reads_only_hit_experts():
    c = chip(grouped_gemm={"peak": 0.6, "half_rows": 32, "half_k": 0})
    rows, experts, n, k = 256, 8, 4096, 7168
    op = K.grouped_gemm(rows, experts, ((k, n),), "fp8", c)
    eff = 0.6 * 32 / (32 + 32)  # 32 rows per expert
    assert op.compute_time == pytest.approx(2 * rows * n * k / (2e15 * eff))
    assert op.bytes == pytest.approx(experts * k * n + rows * (k + 2 * n))
    assert K.grouped_gemm(0, 8, ((k, n),), "fp8", c).time == 0.0


def test_mla_decode_and_prefill():
    c = chip()
    dec = K.mla_decode(64, 32, 4096, 128, 512, 64, "bf16", "bf16", c)
    assert dec.flops == 2 * 64 * 128 * 4096 * (2 * 512 + 64)
    assert dec.memory_time == pytest.approx(32 * 4096 * 576 * 2 / (4e12 * 0.9))
    assert dec.compute_time == pytest.approx(dec.flops / (1e15 * 0.5))
    pre = K.mla_prefill(4096, 2048.5, 128, 192, 128, "bf16", chip(attention_prefill=0.4))
    assert pre.compute_time == pytest.approx(2 * 4096 * 128 * 2048.5 * 320 / (1e15 * 0.4))


def test_memory_and_vector_ops():
    c = chip(vector=0.5, vector_latency=1 * US)
    assert K.memory_op(8e6, c).time == pytest.approx(5 * US + 8e6 / 3.2e12)
    assert K.vector_op(1e6, 3.0, c).time == pytest.approx(1 * US + 3e6 / 2e12)
    e = chip().efficiency
    assert (e.vector, e.vector_latency, e.attention_latency) == (0.8, 5 * US, 5 * US)  # defaults from siblings


def test_attention_and_grouped_gemm_have_their_own_latency():
    c = chip(attention_latency=12 * US, grouped_gemm={"peak": 0.6, "latency": 15 * US})
    assert K.mla_decode(1, 1, 16, 128, 512, 64, "bf16", "bf16", c).latency == pytest.approx(12 * US)
    assert K.grouped_gemm(8, 8, ((7168, 4096), (2048, 7168)), "fp8", c).latency == pytest.approx(30 * US)
    assert K.gemm(8, 4096, 7168, "fp8", c).latency == pytest.approx(5 * US)


def _plane(fabric):
    if fabric.collective_latency is not None:
        return fabric.collective_latency, fabric.collective_sync_per_log2_rank, fabric.collective_efficiency
    return fabric.latency, fabric.sync_per_log2_rank, fabric.combine_efficiency


def test_collective_volumes_per_rank():
    # the NCCL formula: the plane without its custom all-reduce kernel (tested below)
    s = _with_scale_up(load_system("hgx-h200"), custom_all_reduce_latency=None, custom_all_reduce_efficiency=None)
    f = s.spec.scale_up
    lat, sync, eff = _plane(f)
    twice = 1 if f.in_switch_reduction else 2
    op = K.collective("all_reduce", 1e6, 8, s)
    vol = twice * 7 / 8 * 1e6
    assert op.bytes == pytest.approx(vol)
    assert op.comm_time == pytest.approx(lat + twice * sync * 3 + vol / (450e9 * eff))
    assert K.collective("all_gather", 1e6, 4, s).bytes == pytest.approx(3e6)  # nbytes = this rank's shard
    assert K.collective("reduce_scatter", 1e6, 4, s).bytes == pytest.approx(3e6)
    assert K.collective("all_reduce", 1e6, 1, s).time == 0.0
    with pytest.raises(ValueError, match="unknown collective"):
        K.collective("broadcast", 1e6, 8, s)


def test_collective_off_the_nvlink_island_uses_scale_out():
    s = load_system("hgx-h800")  # no fitted collective parameters: the EP kernels' latency, sync and efficiency
    o = s.spec.scale_out
    lat, sync, eff = _plane(o)
    far = K.collective("all_to_all", 1e6, 16, s)
    assert far.comm_time == pytest.approx(lat + sync * 4 + 15 / 16 * 1e6 / (50e9 * eff))


def test_in_switch_reduction_halves_all_reduce_volume():
    s = load_system("hgx-h800")
    fabric = s.spec.scale_up
    nvls = s.spec.model_copy(update={"scale_up": fabric.model_copy(update={"in_switch_reduction": True})})
    s2 = type(s)(nvls, s.chip, s.source)
    a = K.collective("all_reduce", 1e6, 8, s).bytes
    b = K.collective("all_reduce", 1e6, 8, s2).bytes
    assert a == pytest.approx(2 * b)


def test_share_slows_compute_not_latency():
    op = K.gemm(4096, 8192, 4096, "bf16", chip())
    assert op.time_with_share(0.5) == pytest.approx(op.latency + 2 * op.compute_time)
    assert math.isclose(op.time_with_share(1.0), op.time)


# ---------------------------------------------------------------- custom all-reduce and per-backend curves


def _with_scale_up(system, **keys):
    from cloudmatrix.specs.hardware import System

    up = system.spec.scale_up.model_copy(update=keys)
    return System(system.spec.model_copy(update={"scale_up": up}), system.chip, system.source)


def test_custom_all_reduce_is_taken_where_faster_and_only_up_to_its_group_size():
    base = load_system("hgx-h200")
    nccl = _with_scale_up(base, custom_all_reduce_latency=None, custom_all_reduce_efficiency=None)
    custom = _with_scale_up(
        base,
        custom_all_reduce_latency=2 * US,
        custom_all_reduce_sync_per_log2_rank=0.5 * US,
        custom_all_reduce_efficiency=0.5,
        custom_all_reduce_max_ranks=4,
    )
    bw = base.spec.scale_up.bandwidth_per_chip / base.chip.dies
    small = 7168 * 2 * 8  # 8 tokens of a 7,168-wide BF16 hidden state
    want = 2 * US + 2 * 2 * 0.5 * US + 2 * small * 3 / 4 / (bw * 0.5)  # 4 ranks: 2 log2(4) steps, ring volume
    assert K.collective("all_reduce", small, 4, custom).time == pytest.approx(want)
    assert want < K.collective("all_reduce", small, 4, nccl).time
    # above the kernel's group size, and for other collectives, NCCL as before
    assert K.collective("all_reduce", small, 8, custom).time == K.collective("all_reduce", small, 8, nccl).time
    assert K.collective("all_gather", small, 4, custom).time == K.collective("all_gather", small, 4, nccl).time
    huge = 2**30
    assert K.collective("all_reduce", huge, 4, custom).time == pytest.approx(
        min(K.collective("all_reduce", huge, 4, nccl).time, 2 * US + 2 * US + 2 * huge * 3 / 4 / (bw * 0.5))
    )


def test_deployment_backend_selects_the_backend_curves_once():
    from cloudmatrix.errors import CloudMatrixError
    from cloudmatrix.perf.context import DieContext
    from cloudmatrix.perf.deployment import build_deployment
    from cloudmatrix.specs.model import load_model

    model, system = load_model("deepseek-r1"), load_system("gb200-nvl72")
    default = build_deployment(model, dies=4, moe_tp=4, attn_tp=4, precision="fp4", system=system)
    sglang = build_deployment(model, dies=4, moe_tp=4, attn_tp=4, precision="fp4", backend="sglang", system=system)
    c0, c1 = DieContext(model, system, default), DieContext(model, system, sglang)
    assert c1.system is system.for_backend("sglang") and c0.system is system
    shapes = ((7168, 1024), (512, 7168))
    assert c1.grouped("moe", 128, 128, shapes).time != c0.grouped("moe", 128, 128, shapes).time
    # the narrow GEMMs have the backend's curve; bf16 GEMMs (the LM head, the router) keep the default fit's
    assert c1.matmul("q", "attn", 16, ((7168, 1536),), "attn_proj").time != pytest.approx(
        c0.matmul("q", "attn", 16, ((7168, 1536),), "attn_proj").time
    )
    assert c1.matmul("head", "attn", 16, ((7168, 129280),), "head").time == pytest.approx(
        c0.matmul("head", "attn", 16, ((7168, 129280),), "head").time
    )
    with pytest.raises(CloudMatrixError) as e:
        build_deployment(model, dies=4, backend="sgl")
    assert "unknown backend 'sgl'" in str(e.value) and "\n" not in str(e.value)


def test_moe_op_passes_over_every_token_it_takes_in():
    c = chip(grouped_gemm={"peak": 0.6, "half_rows": 32, "half_k": 0, "token_bytes": 10.0})
    shapes = ((7168, 4096),)
    bare = K.grouped_gemm(256, 8, shapes, "fp8", c)
    op = K.grouped_gemm(256, 8, shapes, "fp8", c, token_elements=4096 * 7168)
    # its own pass at HBM rate (4 TB/s), after the GEMM, whatever bounds the GEMM
    assert op.time - bare.time == pytest.approx(4096 * 7168 * 10.0 / 4e12)
    assert op.bytes - bare.bytes == pytest.approx(4096 * 7168 * 10.0)
    # a chip whose curve has no such term (plain GEMM curve, the 910C) ignores it
    assert K.grouped_gemm(256, 8, shapes, "fp8", chip(), token_elements=4096 * 7168).time == pytest.approx(
        K.grouped_gemm(256, 8, shapes, "fp8", chip()).time
    )


def test_nvidia_moe_curves_carry_the_token_pass_fitted_to_whole_moe_ops():
    from cloudmatrix.specs.hardware import load_chip

    for name in ("h200-sxm", "b200", "gb200", "gb300"):
        eff = load_chip(name).efficiency
        for prec, q in eff.grouped_gemm_by_precision.items():
            assert q.token_bytes > 0, (name, prec)


def test_prefill_throughput_kernels_send_a_token_once_per_destination_die():
    from cloudmatrix.perf import comm

    s = load_system("gb200-nvl72")
    up = s.spec.scale_up
    bw = comm.die_bandwidth(s, up)
    # EP2, top-8: nearly every token has an expert on the other die, and goes there once (not 4 of its 8 copies)
    _, pre = comm.ep_all_to_all(s, 2, 4096, 8, 7392, "dispatch", prefill=True)
    _, dec = comm.ep_all_to_all(s, 2, 4096, 8, 7392, "dispatch")
    assert pre * bw == pytest.approx(4096 * 7392 * (1 - 0.5**8))
    assert dec * bw == pytest.approx(4096 * 7392 * 4)
    # TensorRT-LLM's prefill on NVL72 runs its MNNVL all-to-all, with its own fitted fixed cost and rate
    trt = s.for_backend("trtllm").spec.scale_up
    assert trt.prefill_latency is not None and trt.prefill_latency != up.prefill_latency


def test_trtllm_prefill_dispatches_nvfp4_tokens_with_fp4_experts():
    from cloudmatrix.perf.context import DieContext
    from cloudmatrix.perf.deployment import build_deployment
    from cloudmatrix.perf.moe import dispatch_bytes_per_copy
    from cloudmatrix.specs.model import load_model

    r1, s = load_model("deepseek-r1"), load_system("gb200-nvl72")
    kw = dict(dies=4, ep=4, attn_tp=1, precision="fp4", shared_expert_dies=0, redundant_experts=0, system=s)
    trt = DieContext(r1, s, build_deployment(r1, backend="trtllm", **kw))
    sgl = DieContext(r1, s, build_deployment(r1, backend="sglang", **kw))
    assert dispatch_bytes_per_copy(trt, prefill=True) == pytest.approx(7168 * (0.5 + 1 / 16))
    assert dispatch_bytes_per_copy(trt) == dispatch_bytes_per_copy(sgl, prefill=True) == pytest.approx(7168 + 224)


def test_trtllm_prefill_on_hgx_all_gathers_instead_of_an_all_to_all():
    from cloudmatrix.perf.deployment import build_deployment
    from cloudmatrix.perf.prefill import prefill_step
    from cloudmatrix.specs.model import load_model

    r1 = load_model("deepseek-r1")
    kw = dict(dies=8, ep=8, attn_tp=1, precision="fp8", shared_expert_dies=0, redundant_experts=0)

    def moe_rows(system, backend):
        s = load_system(system)
        dep = build_deployment(r1, backend=backend, system=s, **kw)
        step = prefill_step(r1, s, dep, 8 * 4096, 4096, check_memory=False)
        return {r.name: r for r in step.rows if r.group == "moe_layer"}

    hgx_trt, hgx_sgl = moe_rows("hgx-h200", "trtllm"), moe_rows("hgx-h200", "sglang")
    # TensorRT-LLM on HGX: each die receives all 7 other dies' tokens (an NCCL all-gather) and its fused MoE op
    # sums its experts' outputs itself (no separate combine sum); SGLang's DeepEP sends each token only where
    # its experts are (4.6 of 7 dies at top-8)
    # (`limit` = the bytes on the die's link at full rate)
    assert hgx_trt["dispatch"].limit == pytest.approx(hgx_sgl["dispatch"].limit / (1 - (7 / 8) ** 8), rel=1e-3)
    assert "combine_sum" not in hgx_trt and "combine_sum" in hgx_sgl
    # on an NVL72 domain TensorRT-LLM runs its MNNVL all-to-all: the per-destination volume, as DeepEP
    nvl_trt, nvl_sgl = moe_rows("gb200-nvl72", "trtllm"), moe_rows("gb200-nvl72", "sglang")
    assert nvl_trt["dispatch"].limit == pytest.approx(nvl_sgl["dispatch"].limit)
    assert nvl_trt["dispatch"].time != pytest.approx(nvl_sgl["dispatch"].time)  # each stack's own kernel fit
