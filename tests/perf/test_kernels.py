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
    c = chip(vector=0.5)
    assert K.memory_op(8e6, c).time == pytest.approx(5 * US + 8e6 / 3.2e12)
    assert K.vector_op(1e6, 3.0, c).time == pytest.approx(5 * US + 3e6 / 2e12)
    assert chip().efficiency.vector == 0.8  # defaults to the memory fraction


def test_collective_ring_volumes_and_latency():
    s = load_system("hgx-h800")
    f = s.spec.scale_up
    lat = f.collective_latency if f.collective_latency is not None else f.latency
    eff = f.collective_efficiency if f.collective_efficiency is not None else f.combine_efficiency
    op = K.collective("all_reduce", 1e6, 8, s)
    vol = 2 * 7 / 8 * 1e6
    assert op.comm_time == pytest.approx(lat + 2 * f.sync_per_log2_rank * 3 + vol / (200e9 * eff))
    ag = K.collective("all_gather", 1e6, 4, s)
    assert ag.bytes == 3e6
    assert K.collective("all_reduce", 1e6, 1, s).time == 0.0
    # 16 dies leave the 8-GPU NVLink island: the scale-out plane sets the rate
    far = K.collective("all_to_all", 1e6, 16, s)
    o = s.spec.scale_out
    o_lat = o.collective_latency if o.collective_latency is not None else o.latency
    o_eff = o.collective_efficiency if o.collective_efficiency is not None else o.combine_efficiency
    assert far.comm_time == pytest.approx(o_lat + o.sync_per_log2_rank * 4 + 15 / 16 * 1e6 / (50e9 * o_eff))
    with pytest.raises(ValueError, match="unknown collective"):
        K.collective("broadcast", 1e6, 8, s)


def test_share_slows_compute_not_latency():
    op = K.gemm(4096, 8192, 4096, "bf16", chip())
    assert op.time_with_share(0.5) == pytest.approx(op.latency + 2 * op.compute_time)
    assert math.isclose(op.time_with_share(1.0), op.time)
