"""The screen (anchors + numpy + exact polish) against brute force through the step model."""

import math

import numpy as np
import pytest

from cloudmatrix.perf.memory import memory_per_die, usable_hbm
from cloudmatrix.plan.search.curves import decode_curve, pool_costs, prefill_curve
from cloudmatrix.plan.search.frontier import pareto
from cloudmatrix.plan.search.planner import plan_system
from cloudmatrix.plan.search.queueing import max_rate_under, ttft_p90
from cloudmatrix.specs.hardware import load_system
from cloudmatrix.specs.model import load_model

from .plan_small import SYSTEM, small_request, small_space


def _brute_force(req, space):
    """Every (decode layout, batch, prefill layout) by plain loops: the step model at every batch, the fewest
    whole instances per pool that serve the rate; ranked by (chips, TPOT, TTFT)."""
    model, system = load_model(req.model), load_system(SYSTEM)
    dpc = system.chip.dies
    pres = []
    for sw in space.software:
        for lay in space.prefill:
            for t in space.prefill_tokens:
                c = prefill_curve(model, system, lay, sw, t, req.isl)
                if c is not None:
                    pres.append(c)
    best = None
    for sw in space.software:
        for lay in space.decode:
            pc = pool_costs(model, system, lay, sw)
            dep = pc.dep
            b = 1
            while b <= 512:
                mem = memory_per_die(model, dep, b * (req.isl + req.osl), b * (1 + dep.mtp_depth), pc.disp_bytes)
                if sum(mem.values()) > usable_hbm(system, dep):
                    break
                tpot = pc.decode_time(b, req.isl + req.osl / 2) / dep.tokens_per_step()
                if tpot <= req.tpot_p90:
                    per_inst = req.max_utilisation * lay.dies * b / ((req.osl - 1) * tpot)
                    n_d = math.ceil(req.rate / per_inst - 1e-9)
                    for p in pres:
                        lam = max_rate_under(p, req.isl, req.ttft_p90, req.max_utilisation)
                        if lam <= 0:
                            continue
                        n_p = math.ceil(req.rate / lam - 1e-9)
                        chips = n_d * lay.dies // dpc + n_p * p.layout.dies // dpc
                        ttft = float(ttft_p90(p, np.array([req.rate / n_p]), req.isl)[0])
                        key = (chips, round(tpot, 12), ttft)
                        if best is None or key < best[0]:
                            best = (key, lay, b, p.layout, p.tokens_per_die)
                b += 1
    return best


def test_screen_finds_the_brute_force_optimum():
    req, space = small_request(confirm=False, modes=("disaggregated",)), small_space()
    sp = plan_system(SYSTEM, req, space)
    key, lay, b, play, ptok = _brute_force(req, space)
    p = sp.best
    assert (p.chips, p.decode, p.batch_per_die, p.prefill, p.prefill_tokens_per_die) == (key[0], lay, b, play, ptok)
    assert math.isclose(p.tpot, key[1], rel_tol=1e-9)
    # the optimum sits on the TPOT limit: one more sequence per die would break it
    assert p.tpot <= req.tpot_p90


def test_anchor_interpolation_is_close_to_the_step_model():
    model, system = load_model("deepseek-r1"), load_system(SYSTEM)
    sw, lay = small_space().software[0], small_space().decode[0]
    approx = decode_curve(model, system, lay, sw, 1024, 64)
    exact = decode_curve(model, system, lay, sw, 1024, 64, exact=True)
    assert approx.anchors < exact.anchors / 4
    err = np.abs(approx.step / exact.step - 1)
    # between anchors only (the anchors are exact); a kink near 48 per die makes the worst ~5% (docs/plan.md)
    assert err.mean() < 0.01 and err.max() < 0.08, (err.mean(), err.max())
    anchors = [b - 1 for b in (1, 2, 4, 8, 16, 32) if b <= len(err)]
    assert np.all(err[anchors] < 1e-12)


def test_pareto_matches_the_definition():
    rng = np.random.default_rng(3)
    x, y = rng.random(200), rng.random(200)
    got = set(pareto(x, y).tolist())
    want = {i for i in range(200) if not np.any((x > x[i]) & (y >= y[i]) | (x >= x[i]) & (y > y[i]))}
    assert got == want


def test_capacity_mode_split_is_the_best_whole_instance_split():
    """Capacity mode picks the pool split analytically (the balance point's two neighbours); a loop over every
    decode instance count must not find a higher rate for any (decode layout, batch)."""
    from cloudmatrix.plan.search.planner import build_curves
    from cloudmatrix.plan.search.screen import screen

    req, space = small_request(confirm=False, rate=None, modes=("disaggregated",)), small_space()
    model, system = load_model(req.model), load_system(SYSTEM)
    n = 96
    dcs, pcs, _, _ = build_curves(model, system, req, space, n)
    res = screen(system, req, dcs, pcs, n)
    lam = [max_rate_under(p, req.isl, req.ttft_p90, req.max_utilisation) for p in pcs]
    rng = np.random.default_rng(0)
    for i in rng.choice(len(res), size=25, replace=False):
        dc = res.decode[res.rows["dc"][i]]
        b = int(res.rows["batch"][i])
        r1 = req.max_utilisation * dc.rate_per_instance(req.osl)[b - 1]
        cd = dc.layout.dies // system.chip.dies
        best = 0.0
        for p, lm in zip(pcs, lam, strict=True):
            cp = p.layout.dies // system.chip.dies
            for nd in range(1, n // cd + 1):
                n_p = (n - nd * cd) // cp
                if n_p >= 1 and lm > 0:
                    best = max(best, min(n_p * lm, nd * r1))
        assert res.rows["rate"][i] == pytest.approx(best, rel=1e-9)
        assert res.rows["chips"][i] <= n
