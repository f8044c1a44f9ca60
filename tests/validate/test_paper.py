"""`cloudmatrix reproduce`: the published figures, the report, and the shipped paper scenarios."""

import json
import math
import subprocess
import sys

import pytest

from cloudmatrix.perf import prefill_step
from cloudmatrix.sim.runtime import Simulation
from cloudmatrix.sim.scenario import load_scenario, scenario_names
from cloudmatrix.validate.paper import PUBLISHED, markdown, reproduce


@pytest.fixture(scope="module")
def rows():
    return reproduce(simulate_scenarios=False)


def test_every_published_figure_has_a_row(rows):
    published = {r.published for r in rows}
    for key in ("prefill_default", "prefill_perfect", "decode", "decode_15ms"):
        assert PUBLISHED[key] in published
    for r in rows:
        assert math.isfinite(r.cost_model) and r.cost_model > 0
        assert r.explanation


def test_default_balance_costs_exactly_its_expert_imbalance(rows):
    """The two prefill rows differ only in placement: the default one carries a step imbalance above 1
    (uniform popularity still leaves sampling noise), and with that imbalance set to 1.0 its step gives
    the perfect-balance figure back."""
    default, perfect = rows[0], rows[1]
    imbalance = float(default.explanation.split("expert imbalance used ")[1].split(" ")[0])
    assert imbalance > 1.0
    assert perfect.cost_model > default.cost_model
    sc = load_scenario("paper-prefill")
    system, model = sc.check()
    dep = sc.deployment(sc.prefill, model).with_(imbalance=1.0)
    balanced = prefill_step(model, system, dep, sc.prefill.tokens_per_die, 4096)
    assert balanced.tokens_per_s_per_chip == pytest.approx(perfect.cost_model, rel=1e-9)


def test_15ms_row_meets_the_cap(rows):
    row = [r for r in rows if "15 ms" in r.figure][0]
    tpot_ms = float(row.explanation.split("TPOT ")[1].split(" ms")[0])
    assert tpot_ms <= 15.0


def test_markdown_table_lists_errors(rows):
    md = markdown(rows)
    assert md.count("\n") == len(rows) + 1
    assert "%" in md


@pytest.mark.parametrize("name", scenario_names())
def test_shipped_scenarios_are_valid(name):
    sim = Simulation(load_scenario(name, {"workload.num_requests": 2000}))
    assert sim.n == 2000


def test_reproduce_cli_writes_html_and_json(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "cloudmatrix.cli.main",
            "reproduce",
            "--no-sim",
            "--json",
            "--report",
            str(tmp_path / "r.html"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {"figure", "published", "cost_model", "cost_model_error"} <= set(data[0])
    assert "<table>" in (tmp_path / "r.html").read_text()
    bad = subprocess.run(
        [sys.executable, "-m", "cloudmatrix.cli.main", "reproduce", "--report", "x.pdf"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_a_cap_no_batch_meets_is_a_zero_throughput_row_not_a_crash(monkeypatch):
    from cloudmatrix.validate import paper

    monkeypatch.setattr(paper, "TPOT_CAP", 1e-4)  # 0.1 ms: no decode step is that short
    rows = {r.figure: r for r in paper.reproduce(simulate_scenarios=False)}
    r = rows["decode tokens/s per NPU under a 15 ms TPOT cap"]
    assert r.cost_model == 0.0 and r.simulated is None
    assert r.model_error == -1.0 and "no batch meets the cap" in r.explanation
