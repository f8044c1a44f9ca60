"""How fast `cloudmatrix plan` searches: points screened per second, and the paper's question end to end.

    OMP_NUM_THREADS=1 python benchmarks/plan_speed.py [--no-e2e]

1. Screen throughput on one core: the numpy composition (`plan.search.screen.screen`) over the full default
   space of DeepSeek-R1 on CloudMatrix384 (4K/256, capacity mode), curves built beforehand. Baseline in the
   same run: the brute-force Python loop of tests/plan (the step model at every batch, a Python iteration per
   (decode layout, batch, prefill layout) point) over a small slice, points per second; the ratio is printed.
   Goal: >= 1M points per minute.
2. The paper's question (Zuo et al., arXiv 2506.12708: DeepSeek-R1 on CloudMatrix384, 4K in / 256 out,
   TPOT <= 50 ms) end to end, run first in a cold process: layouts -> anchors -> screen -> polish ->
   simulation of the top 4 (2 processes).
   Goal: <= 30 s.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from cloudmatrix.plan.search.curves import pool_costs  # noqa: E402
from cloudmatrix.plan.search.planner import build_curves, default_space, run_plan  # noqa: E402
from cloudmatrix.plan.search.queueing import max_rate_under  # noqa: E402
from cloudmatrix.plan.search.request import PlanRequest  # noqa: E402
from cloudmatrix.plan.search.screen import chip_limit, screen  # noqa: E402
from cloudmatrix.specs.hardware import load_system  # noqa: E402
from cloudmatrix.specs.model import load_model  # noqa: E402


def brute_force_rate(req, dcs, pcs, budget_s: float = 3.0) -> float:
    """Points per second of a Python loop through the step model (the baseline)."""
    model, system = load_model(req.model), load_system(req.systems[0])
    lams = [max_rate_under(p, req.isl, req.ttft_p90, req.max_utilisation) for p in pcs]
    n, t0 = 0, time.perf_counter()
    for dc in dcs:
        pc = pool_costs(model, system, dc.layout, dc.software)
        for b in dc.batch.astype(int):
            tpot = pc.decode_time(int(b), req.isl + req.osl / 2) / pc.dep.tokens_per_step()
            r1 = req.max_utilisation * dc.layout.dies * b / ((req.osl - 1) * tpot)
            for p, lam in zip(pcs, lams, strict=True):
                if p.software != dc.software or lam <= 0:
                    continue
                nd = math.ceil(10.0 / r1)
                _ = nd * dc.layout.dies + math.ceil(10.0 / lam) * p.layout.dies
                n += 1
            if time.perf_counter() - t0 > budget_s:
                return n / (time.perf_counter() - t0)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-e2e", action="store_true")
    args = ap.parse_args()
    req = PlanRequest(systems=("cloudmatrix384",), isl=4096, osl=256, tpot_p90=0.050, ttft_p90=10.0, workers=2)
    if not args.no_e2e:  # first, in a cold process: no step-model memo from the throughput part
        t0, c0, k0 = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
        out = run_plan(req)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        k1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        child = (k1.ru_utime + k1.ru_stime) - (k0.ru_utime + k0.ru_stime)
        s = out.systems[0]
        b = s.best
        c = b.confirmed or {}
        print(f"paper question end to end: {wall:.1f} s (screen + polish {s.screen_s:.1f} s, {len(s.candidates)} "
              f"simulations {out.confirm_s:.1f} s); CPU: {cpu:.1f} s in this process + {child:.1f} s in the "
              f"simulation processes; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")  # fmt: skip
        print(f"  best: {b.label()} | {b.software.label()} | {b.chips} chips")
        print(f"  screen: {b.tokens_per_chip:,.0f} out tok/s/chip, TPOT {b.tpot * 1e3:.1f} ms, "
              f"TTFT p90 ~{b.ttft:.2f} s")
        print(f"  simulated: {c.get('output_tokens_per_s_per_chip', float('nan')):,.0f} out tok/s/chip, decode "
              f"{c.get('decode_tokens_per_s_per_chip', float('nan')):,.0f} tok/s per decode chip, TPOT p90 "
              f"{c.get('tpot_p90_s', float('nan')) * 1e3:.1f} ms, TTFT p90 "
              f"{c.get('ttft_p90_s', float('nan')):.2f} s")  # fmt: skip

    model, system = load_model(req.model), load_system("cloudmatrix384")
    t0 = time.perf_counter()
    dcs, pcs, ccs, anchors = build_curves(model, system, req, default_space(model, system, req), system.chips)
    t_curves = time.perf_counter() - t0
    print(f"curves: {len(dcs)} decode + {len(pcs)} prefill + {len(ccs)} colocated, {anchors:,} step-model calls "
          f"in {t_curves:.1f} s "
          f"({anchors / t_curves:,.0f} calls/s)")  # fmt: skip
    reps, t0 = 3, time.perf_counter()
    for _ in range(reps):
        res = screen(system, req, dcs, pcs, chip_limit(system, req), ccs)
    t_screen = (time.perf_counter() - t0) / reps
    rate = res.points / t_screen
    print(f"screen: {res.points:,} points in {t_screen:.2f} s = {rate:,.0f} points/s = {rate * 60 / 1e6:.1f}M/min")
    base = brute_force_rate(req, dcs[:40], pcs)
    print(f"baseline (Python loop through the step model): {base:,.0f} points/s; "
          f"screen / baseline = {rate / base:,.0f}x")  # fmt: skip
    print(f"rows kept: {len(res):,}; feasible: {int(np.sum(res.feasible(req))):,}")


if __name__ == "__main__":
    main()
