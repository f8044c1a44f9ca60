"""AIC/AIV contention on the A3 die as pto-isa's MegaMoE timelines measure it (benchmarks/calibrate/ascend_910c.py
contention_evidence), and why the twin does not carry it: the one mechanism it could (a die-level bandwidth the GEMM
and the transfer share) fails on the second and third measurement. The prefill audit's sensitivity re-derives the
twin's own two-microbatch layer before it varies anything."""

import sys
from pathlib import Path

import pytest

from cloudmatrix.perf.overlap import comm_cores_for, layer_time

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "calibrate"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import ascend_910c  # noqa: E402
import ascend_910c_prefill_audit as audit  # noqa: E402


def test_the_timelines_give_three_different_contention_factors():
    """The same kind of transfer (an AIV combine at ~0.1 TB/s) costs the GEMM 41% in one schedule and 7% in the other,
    and a dispatch of similar volume costs nothing: the factor belongs to the schedule, not to the die."""
    (_, base, t1), (_, v1, t2), (_, disp, t3) = ascend_910c.contention_evidence()["cases"]
    assert base < 0.65 and v1 > 0.9 and disp > 0.97
    assert t2 > t1 and t3 > t1  # the cases that barely slow carry more die traffic than the one that slows most


def test_a_shared_die_bandwidth_fitted_to_case_1_misses_cases_2_and_3():
    ev = ascend_910c.contention_evidence()
    measured = {n: ev["cases"][n - 1][1] for n in (2, 3)}
    for n, pred in ev["predicted"].items():
        assert pred < measured[n] - 0.1, n


def test_megamoe_gemm_bytes_are_weights_input_output():
    mm = ascend_910c.MEGAMOE
    rows = mm["tokens"] * mm["top_k"] / mm["experts"]
    b = ascend_910c.megamoe_bytes()
    assert b["gmm2"] == pytest.approx(mm["inter"] * mm["hidden"] * (1 + rows / mm["hidden"] + 2 * rows / mm["inter"]))
    # the v1 GMM2 on 8 AICs alone runs at the baseline's 24-AIC per-core rate (the two timelines agree there)
    per_core_v1 = 8 * ascend_910c._v1_window("gmm2_alone")
    per_core_base = 24 * ascend_910c._window("gmm2_alone")
    assert per_core_v1 == pytest.approx(per_core_base, rel=0.05)


@pytest.fixture(scope="module")
def half_layer():
    sc, system, model, dep = audit.deployment()
    tokens = sc.prefill.tokens_per_die
    return system, audit.layer_ops(model, system, dep.with_(microbatches=2), tokens / 2)


def test_sensitivity_starts_from_the_twins_own_layer(half_layer):
    system, ops = half_layer
    twin = layer_time(ops, 2, "comm-compute", 1.0, comm_cores_for(system.chip))[0]
    assert audit.layer_with_contention(ops, {}) == pytest.approx(twin, rel=1e-12)


def test_slower_gemms_beside_the_combine_lengthen_the_layer(half_layer):
    _, ops = half_layer
    free = audit.layer_with_contention(ops, {})
    assert audit.layer_with_contention(ops, {"combine": 0.585}) > audit.layer_with_contention(ops, {"combine": 0.93})
    assert audit.layer_with_contention(ops, {"combine": 0.93}) > free
    assert audit.layer_with_contention(ops, {"no_such_transfer": 0.5}) == free
