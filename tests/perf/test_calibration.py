"""The cost model reproduces the kernel-level figures it was calibrated from (within 10%)."""

import pytest

from cloudmatrix.perf import comm
from cloudmatrix.perf.calibration import (
    EP_BYTES_PER_COPY,
    EP_DEGREES,
    EP_LATENCY_US,
    EP_TOKENS_PER_RANK,
    EP_TOP_K,
    INT8_GEMM_SHAPES,
    INT8_GEMM_UTILISATION,
    MLA_COMPUTE_UTILISATION,
    MLA_MEMORY_BANDWIDTH,
)
from cloudmatrix.perf.deployment import Deployment
from cloudmatrix.perf.layers import DieContext
from cloudmatrix.perf.op import compute_op
from cloudmatrix.specs.hardware import load_chip, load_system
from cloudmatrix.specs.model import load_model

# which plane each published column ran over: CANN EP over UB; DeepEP low-latency kernels over RDMA
PLANES = {"cloudmatrix384": ("cloudmatrix384", "scale_up"), "h800": ("hgx-h800", "scale_out")}


@pytest.mark.parametrize("key", sorted(EP_LATENCY_US))
def test_ep_dispatch_combine_table_from_one_formula(key):
    system_name, op = key
    sys_file, plane = PLANES[system_name]
    system = load_system(sys_file)
    fabric = getattr(system.spec, plane)
    for ep, published_us in zip(EP_DEGREES, EP_LATENCY_US[key], strict=True):
        t, limit = comm.ep_all_to_all(
            system, ep, EP_TOKENS_PER_RANK, EP_TOP_K, EP_BYTES_PER_COPY[key], op, fabric=fabric
        )
        assert t * 1e6 == pytest.approx(published_us, rel=0.10), (key, ep)
        assert limit < t  # the physical floor is below what the kernel achieves


def test_ep_trend_rises_then_flattens_on_both_systems():
    """EP8 -> EP256: latency grows, and grows less from 128 to 256 than from 8 to 32."""
    for system_name, (sys_file, plane) in PLANES.items():
        system = load_system(sys_file)
        fabric = getattr(system.spec, plane)
        key = (system_name, "dispatch")
        ts = [
            comm.ep_all_to_all(system, ep, 128, 8, EP_BYTES_PER_COPY[key], "dispatch", fabric=fabric)[0]
            for ep in EP_DEGREES
        ]
        assert ts == sorted(ts)
        assert ts[3] - ts[2] < ts[1] - ts[0]


def test_cloudmatrix_ub_beats_h800_rdma_for_dispatch_and_combine():
    cm, h8 = load_system("cloudmatrix384"), load_system("hgx-h800")
    for op in ("dispatch", "combine"):
        a = comm.ep_all_to_all(cm, 256, 128, 8, 7680, op, fabric=cm.spec.scale_up)[0]
        b = comm.ep_all_to_all(h8, 256, 128, 8, 7392, op, fabric=h8.spec.scale_out)[0]
        assert a < b


@pytest.mark.parametrize("chip_name", sorted(MLA_COMPUTE_UTILISATION))
def test_mla_kernel_figures(chip_name):
    chip = load_chip(chip_name)
    peak = chip.peak("bf16")
    bw = chip.die.hbm_bandwidth
    # a compute-bound attention op: achieved FLOP/s / peak
    op = compute_op(
        "attn", "attn", 1, 1e12, 1.0, peak, chip.efficiency.attention_compute, bw, chip.efficiency.attention_memory
    )
    assert (1e12 / op.time) / peak == pytest.approx(MLA_COMPUTE_UTILISATION[chip_name], rel=0.10)
    # a memory-bound one: achieved bytes/s
    op = compute_op(
        "attn", "attn", 1, 1.0, 1e9, peak, chip.efficiency.attention_compute, bw, chip.efficiency.attention_memory
    )
    assert 1e9 / op.time == pytest.approx(MLA_MEMORY_BANDWIDTH[chip_name], rel=0.10)


@pytest.mark.parametrize("m,n,k", INT8_GEMM_SHAPES)
def test_int8_grouped_gemm_utilisation_on_910c(m, n, k):
    """The paper's INT8 GEMM shapes stay compute-bound and land inside the published 77.4-82.7% band."""
    ctx = DieContext(load_model("deepseek-r1"), load_system("cloudmatrix384"), Deployment(dies=1))
    op = ctx.matmul("gemm", "moe", m, [(k, n)])
    assert op.bound == "compute"
    util = (2 * m * n * k / op.time) / ctx.chip.peak("int8")
    lo, hi = INT8_GEMM_UTILISATION
    assert lo * 0.9 <= util <= hi * 1.1
