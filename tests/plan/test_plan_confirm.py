"""Confirmation by the simulator, the written scenario's round trip through `simulate`, and Ray."""

import json
import subprocess
import sys

import pytest

from cloudmatrix.plan.search.confirm import confirm, run_scenario_text, scenario_toml
from cloudmatrix.plan.search.planner import run_plan
from cloudmatrix.sim.scenario import load_scenario

from .plan_small import SYSTEM, small_request, small_space


@pytest.fixture(scope="module")
def planned():
    req = small_request()
    return req, run_plan(req, spaces={SYSTEM: small_space()})


def test_every_returned_plan_meets_its_constraints_when_simulated(planned):
    req, result = planned
    (sp,) = result.systems
    assert sp.best is not None and sp.best.confirmed is not None
    for p in sp.candidates:
        c = p.confirmed
        assert "error" not in c, c
        if p is sp.best or p.meets_slo:
            assert c["ttft_p90_s"] <= req.ttft_p90 and c["tpot_p90_s"] <= req.tpot_p90
            # it serves the offered load: finished requests/s within 15% of the rate over a short window
            assert c["requests_per_s"] == pytest.approx(req.rate, rel=0.15)
        assert p.chips <= sp.system.chips


def test_written_scenario_runs_unchanged_in_simulate(planned, tmp_path):
    req, result = planned
    best = result.systems[0].best
    path = tmp_path / "best.toml"
    path.write_text(scenario_toml(best, req))
    sc = load_scenario(path)
    assert (sc.decode.instances, sc.decode.dies, sc.decode.batch_per_die) == (
        best.decode_instances, best.decode.dies, best.batch_per_die)  # fmt: skip
    assert (sc.prefill.instances, sc.prefill.dies, sc.prefill.tokens_per_die) == (
        best.prefill_instances, best.prefill.dies, best.prefill_tokens_per_die)  # fmt: skip
    p = subprocess.run(
        [sys.executable, "-m", "cloudmatrix.cli.main", "simulate", str(path), "--json", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    s = json.loads(p.stdout)
    # the same scenario, the same seed: simulate's figures are the confirmation's
    assert s["ttft_s"]["p90"] == pytest.approx(best.confirmed["ttft_p90_s"], rel=1e-9)
    assert s["tpot_s"]["p90"] == pytest.approx(best.confirmed["tpot_p90_s"], rel=1e-9)


def test_ray_tasks_give_the_local_result(planned):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'cloudmatrix[scale]')")
    req, result = planned
    text = scenario_toml(result.systems[0].best, req.__class__(**{**req.__dict__, "sim_seconds": 2.0}))
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        (got,) = confirm([text], use_ray=True)
    finally:
        ray.shutdown()
    assert got == run_scenario_text(text)


def test_colocated_plan_meets_its_slo_when_simulated(tmp_path):
    """A colocated-only request: the plan mixes prefill chunks into decode steps, and the simulator agrees."""
    req = small_request(modes=("colocated",), top_k=1, ttft_p90=3.0, tpot_p90=0.200)
    space = small_space()
    space.chunks = (512, 1024)
    result = run_plan(req, spaces={SYSTEM: space})
    best = result.systems[0].best
    assert best.mode == "colocated" and best.prefill is None
    c = best.confirmed
    assert c["ttft_p90_s"] <= req.ttft_p90 and c["tpot_p90_s"] <= req.tpot_p90
    path = tmp_path / "coloc.toml"
    path.write_text(scenario_toml(best, req))
    sc = load_scenario(path)
    assert sc.mode == "colocated" and sc.colocated.tokens_per_die == best.prefill_tokens_per_die


def test_report_png_and_html_are_self_contained(planned, tmp_path):
    from cloudmatrix.report.plan_report import to_json, write_frontier_png, write_html

    _, result = planned
    png = write_frontier_png(result, tmp_path / "f.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 150_000
    page = write_html(result, tmp_path / "r.html").read_text()
    assert "data:image/png;base64," in page and 'src="http' not in page
    assert result.systems[0].best.label() in page.replace("&#x27;", "'")
    d = to_json(result)
    assert d["systems"][0]["best"]["chips"] == result.systems[0].best.chips
    assert d["systems"][0]["frontier"], "the frontier has points"


def test_closed_loop_request_is_planned_and_simulated_closed():
    req = small_request(rate=None, concurrency=64, top_k=1, modes=("disaggregated",))
    result = run_plan(req, spaces={SYSTEM: small_space()})
    best = result.systems[0].best
    text = scenario_toml(best, req)
    assert 'kind = "closed"' in text and "concurrency = 64" in text
    c = best.confirmed
    assert c["ttft_p90_s"] <= req.ttft_p90 and c["tpot_p90_s"] <= req.tpot_p90
    # 64 clients cycling through TTFT + (osl - 1) TPOT: the screen's rate is within 25% of the simulated one
    assert best.rate == pytest.approx(c["requests_per_s"], rel=0.25)
