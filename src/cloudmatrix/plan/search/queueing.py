"""Time to first token of a prefill instance under Poisson arrivals, in numpy: the screen's TTFT estimate.

A free instance starts at once with whatever is queued (serving.prefill_scheduler), so under load a
batch holds the prompts that arrived during the previous one: k = lam * t(k), solved by iteration.
The p90 is a heuristic (nothing fitted): the own batch t(k), plus waiting out a running batch with the
probability that one runs (0.9 of it at the p90), plus a queue as the instance nears its full-batch rate:
the M/D/1 term rho / (2 (1 - rho)) scaled by rho^k_max, the chance that more prompts arrive during a full
batch than the next one holds (a batch server with room for k_max prompts queues far less than a
one-at-a-time server; at k_max = 1 the term is M/D/1's).
The simulator confirms the plans; docs/plan.md reports how far this estimate is off.
"""

from __future__ import annotations

import math

import numpy as np

from cloudmatrix.plan.search.curves import PrefillCurve
from cloudmatrix.sim.scenario import FrontEndSpec


def ttft_p90(curve: PrefillCurve, lam: np.ndarray, isl: int) -> np.ndarray:
    """TTFT p90 [s] at `lam` requests/s per prefill instance (inf at or past saturation)."""
    lam = np.asarray(lam, dtype=np.float64)
    k = np.ones_like(lam)
    for _ in range(40):
        k = np.clip(lam * np.interp(k, curve.k, curve.time), 1.0, curve.k_max)
    t = np.interp(k, curve.k, curve.time)
    busy = np.minimum(1.0, lam * t / k)
    rho = lam / curve.max_rate
    full = float(curve.time[-1])
    with np.errstate(divide="ignore"):
        queue = np.where(rho < 1, rho**curve.k_max / (2 * (1 - rho)) * full * math.log(10), np.inf)
    fe = FrontEndSpec()
    return fe.ingress(isl) + fe.egress + t * (1 + 0.9 * busy) + queue


def max_rate_under(curve: PrefillCurve, isl: int, ttft_slo: float, max_utilisation: float) -> float:
    """Largest requests/s per instance whose estimated TTFT p90 meets the SLO at <= max_utilisation (0: none)."""
    lam = curve.max_rate * max_utilisation * np.linspace(1e-3, 1.0, 400)
    ok = ttft_p90(curve, lam, isl) <= ttft_slo
    return float(lam[ok].max()) if ok.any() else 0.0
