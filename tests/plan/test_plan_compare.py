"""`compare --with-plan`: the planner's best plan per system beside the published layout."""

import io

from rich.console import Console

import cloudmatrix.plan.search.planner as planner
from cloudmatrix.cli.compare_cmd import planner_best, print_planner_table
from cloudmatrix.plan.cross_system import ServingTarget, evaluate_systems
from cloudmatrix.plan.economics import Economics

from .plan_small import small_space


def test_compare_shows_the_planners_best_plan(monkeypatch):
    real = planner.plan_system
    seen = {}

    def small(key, req, space=None, progress=None):
        seen["req"] = req
        seen["plan"] = real(key, req, small_space())
        return seen["plan"]

    monkeypatch.setattr(planner, "plan_system", small)
    target = ServingTarget(model="deepseek-r1", input_len=1024, output_len=64, tpot_slo=0.04)
    (got,) = planner_best(["cloudmatrix384"], target)
    # the planner was asked the compare question: same workload and TPOT target, screen only
    req = seen["req"]
    assert (req.isl, req.osl, req.tpot_p90, req.confirm, req.capacity_mode) == (1024, 64, 0.04, False, True)
    best = seen["plan"].best
    assert got["plan"]["screen"]["output_tokens_per_s_per_chip"] == best.tokens_per_chip
    assert got["plan"]["screen"]["tpot_s"] <= 0.04
    results = evaluate_systems(["cloudmatrix384"], target, Economics())
    buf = io.StringIO()
    print_planner_table(results, [got], Console(file=buf, width=100))
    text = buf.getvalue()
    assert f"{best.tokens_per_chip:,.0f}" in text and f"{results[0].output_tokens_per_s_per_chip:,.0f}" in text
