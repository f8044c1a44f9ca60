"""Infeasible requests name the binding constraint, by how much, and the fix."""

import re
import subprocess
import sys

import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.plan.search.planner import run_plan

from .plan_small import SYSTEM, small_request, small_space


def _error(**kw) -> str:
    with pytest.raises(CloudMatrixError) as e:
        run_plan(small_request(confirm=False, **kw), spaces={SYSTEM: small_space()})
    return str(e.value)


def test_tpot_target_below_any_batch_names_tpot_and_the_reachable_value():
    msg = _error(tpot_p90=0.001)
    assert "TPOT p90 binds" in msg and "--tpot-p90" in msg
    reach = float(re.search(r"reaches ([\d.]+) ms", msg).group(1))
    assert reach > 1.0  # the best TPOT any plan reaches, above the 1 ms asked
    # asking for exactly what it says is reachable makes the request feasible
    ok = run_plan(small_request(confirm=False, tpot_p90=reach * 1.01e-3), spaces={SYSTEM: small_space()})
    assert ok.systems[0].best is not None


def test_too_few_chips_for_the_rate_names_the_chip_limit():
    msg = _error(rate=400.0, chips=48)
    assert "chips binds" in msg and "48 allowed" in msg and "--chips" in msg


def test_ttft_target_below_one_prefill_names_ttft():
    msg = _error(ttft_p90=0.005)
    assert "TTFT p90 binds" in msg and "--ttft-p90" in msg


def test_cli_reports_one_line_and_exit_2():
    p = subprocess.run(
        [sys.executable, "-m", "cloudmatrix.cli.main", "plan", "--model", "qwen3-30b-a3b", "--system", "hgx-h100",
         "--chips", "8", "--rate", "10",
         "--tpot-p90", "0.0001", "--no-confirm", "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 2
    assert "TPOT p90 binds" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_budget_below_the_cheapest_plan_names_the_budget():
    msg = _error(budget_usd=1e5)
    assert "budget $ binds" in msg and "--budget-usd" in msg


def test_cli_json_plan_on_a_small_system(tmp_path):
    import json

    out = tmp_path / "best.toml"
    p = subprocess.run(
        [sys.executable, "-m", "cloudmatrix.cli.main", "plan", "--model", "qwen3-30b-a3b", "--system", "hgx-h100",
         "--chips", "8", "--rate", "4", "--isl", "1024", "--osl", "128", "--tpot-p90", "0.05", "--ttft-p90", "2",
         "--no-confirm", "--json", "--out-scenario", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    best = json.loads(p.stdout)["systems"][0]["best"]
    assert best["chips"] <= 8 and best["screen"]["tpot_s"] <= 0.05 and best["screen"]["ttft_p90_s"] <= 2
    assert 'system = "hgx-h100"' in out.read_text() and "nodes = 1" in out.read_text()
