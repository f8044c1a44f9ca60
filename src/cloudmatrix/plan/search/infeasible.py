"""Why no plan qualifies: the binding constraint, by how much, and what would make the request feasible."""

from __future__ import annotations

import numpy as np

from cloudmatrix.plan.search.request import PlanRequest
from cloudmatrix.plan.search.screen import ScreenResult, tokens_per_chip

# constraint -> (metric column, limit in the request, unit scale, unit, the flag that relaxes it)
_METRIC = {
    "TPOT p90": ("tpot", "tpot_p90", 1e3, "ms", "--tpot-p90"),
    "TTFT p90": ("ttft", "ttft_p90", 1.0, "s", "--ttft-p90"),
    "chips": ("chips", None, 1.0, "chips", "--chips (or a larger system)"),
    "budget $": ("usd", "budget_usd", 1e-6, "M$", "--budget-usd"),
    "budget kW": ("kw", "budget_kw", 1.0, "kW", "--budget-kw"),
}


def diagnose(res: ScreenResult, req: PlanRequest, system_key: str) -> str:
    """One line: for each constraint, the best any plan achieves among those that meet every other one."""
    if len(res) == 0 and not res.prefill and "colocated" not in req.modes:
        return (
            f"{system_key}: no prefill instance holds {req.model} with a whole {req.isl}-token prompt in its token "
            "budget; allow more chips (--chips) or use a system with more HBM per die"
        )
    if len(res) == 0:
        return (
            f"{system_key}: no decode instance holds {req.model}'s weights plus one {req.isl + req.osl}-token "
            "sequence per die at any size up to the chip limit; allow more chips (--chips), or use a system "
            "with more HBM per die"
        )
    checks = res.checks(req)
    everything = np.ones(len(res), bool)
    parts = []
    for name, ok in checks.items():  # alone binding: every plan that meets the others fails this one
        others = np.logical_and.reduce([v for k, v in checks.items() if k != name] or [everything])
        if others.any() and not ok[others].any():
            parts.append(_why(name, res, req, others, True))
    if not parts:  # no single constraint: name those no plan meets at all
        parts = [_why(name, res, req, everything, False) for name, ok in checks.items() if not ok.any()]
    if not parts:
        parts.append("several constraints bind together; relax the TTFT or TPOT target")
    return f"{system_key}: no plan meets the request: " + "; ".join(parts)


def _why(name: str, res: ScreenResult, req: PlanRequest, pool: np.ndarray, alone: bool) -> str:
    tail = "" if alone else " (other constraints also fail)"
    if name == "served rate":
        best = float(res.rows["rate"][pool].max())
        return (
            f"served rate binds: at most {best:,.1f} req/s fit within the limits, {req.rate:,.1f} asked "
            f"(short by {req.rate - best:,.1f}); lower --rate or allow more chips{tail}"
        )
    col, key, scale, unit, flag = _METRIC[name]
    limit = res.limits["chips"] if key is None else getattr(req, key)
    vals = res.rows[col][pool]
    best = float(vals.min())
    if name == "chips" and req.rate is not None:
        per = tokens_per_chip(res, req)[pool]
        msg = f"{name} binds: the best plan needs {best:,.0f} chips, {limit:,.0f} allowed"
        return msg + f" (best {per.max():,.0f} tokens/s per chip); raise {flag} to {best:,.0f} or lower --rate{tail}"
    return (
        f"{name} binds: the best plan reaches {best * scale:,.4g} {unit} against the limit of {limit * scale:,.4g} "
        f"{unit} (over by {(best - limit) * scale:,.3g} {unit}); raise {flag} to at least {best * scale:,.4g} "
        f"{unit}{tail}"
    )
