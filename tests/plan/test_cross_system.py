"""The decode sweep respects the SLO, layouts are valid, and the report is written."""

import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.plan.cross_system import ServingTarget, evaluate_system, evaluate_systems
from cloudmatrix.plan.economics import Economics
from cloudmatrix.plan.layouts import KNOWN_SYSTEMS, layout_for
from cloudmatrix.plan.sweep import DecodePoint, best_under_slo
from cloudmatrix.report.cross_system_report import write_report
from cloudmatrix.specs.model import load_model

R1 = load_model("deepseek-r1")


def test_best_under_slo_picks_most_throughput_that_meets_it():
    curve = [DecodePoint(b, t, tp, 0.0, 0.0) for b, t, tp in [(8, 0.01, 100), (16, 0.02, 180), (32, 0.04, 300)]]
    assert best_under_slo(curve, 0.03).batch_per_die == 16
    assert best_under_slo(curve, 0.04).batch_per_die == 32
    assert best_under_slo(curve, 0.005) is None


def test_cm384_sweep_meets_slo_and_tighter_slo_lowers_batch():
    layout, econ = layout_for("cloudmatrix384"), Economics()
    loose = evaluate_system(layout, R1, ServingTarget(tpot_slo=0.050), econ)
    tight = evaluate_system(layout, R1, ServingTarget(tpot_slo=0.030), econ)
    assert loose.decode.tpot <= 0.050 and tight.decode.tpot <= 0.030
    assert tight.decode.batch_per_die < loose.decode.batch_per_die
    assert tight.decode.tokens_per_s_per_chip < loose.decode.tokens_per_s_per_chip
    # no point on the chosen curve meets the SLO with more throughput
    assert all(p.tokens_per_s_per_chip <= loose.decode.tokens_per_s_per_chip for p in loose.curve if p.tpot <= 0.05)
    assert loose.split.chips <= 384


def test_every_layout_is_valid_for_deepseek():
    for name in KNOWN_SYSTEMS:
        layout = layout_for(name)
        assert layout.decode_options, name
        for shape in (layout.prefill, *layout.decode_options):
            dep = shape.deployment(R1, layout)
            slots = R1.routed_experts + dep.redundant_experts
            assert slots % dep.routed_dies == 0, (name, shape)


def test_hgx_cluster_is_sized_to_whole_nodes():
    r = evaluate_systems(["hgx-h800"], ServingTarget(), Economics())[0]
    assert r.chips == r.split.chips and r.chips % 8 == 0
    assert r.system.power == pytest.approx(r.system.nodes * 10.2e3)


def test_unknown_system_and_precision():
    with pytest.raises(CloudMatrixError, match="no serving layout"):
        layout_for("tpu-v5p")
    with pytest.raises(CloudMatrixError, match="unknown precision"):
        layout_for("gb200-nvl72:fp3")


def test_report_small_case(tmp_path):
    target, econ = ServingTarget(output_len=128), Economics()
    results = evaluate_systems(["gb200-nvl72", "gb200-nvl72:fp8"], target, econ)
    paths = write_report(results, target, econ, tmp_path / "rep")
    assert [p.name for p in paths] == ["decode_curves.png", "system_bars.png", "compare.html"]
    assert all(p.stat().st_size > 1000 for p in paths)
    html = paths[-1].read_text()
    assert 'id="compare-table"' in html and "gb200-nvl72:fp8" in html
    assert html.count("data:image/png;base64,") == 2
    assert "LMSYS" in html and "Caveat" in html
