"""The analytic screen: every (decode layout, batch per die, prefill layout, pool split) in numpy.

Per decode curve the arrays run over batch x prefill layout (x two pool splits in capacity mode), so a
decode layout costs a few vector operations, not a Python call per point. Output: one row per
(decode layout, batch), the best prefill pairing and split for it, with every constraint's verdict.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cloudmatrix.plan.search.curves import ColocatedCurve, DecodeCurve, PrefillCurve
from cloudmatrix.plan.search.queueing import max_rate_under, ttft_p90
from cloudmatrix.plan.search.request import PlanRequest
from cloudmatrix.sim.scenario import FrontEndSpec
from cloudmatrix.specs.hardware import System

COLUMNS = ("dc", "batch", "pc", "n_d", "n_p", "chips", "rate", "tpot", "ttft", "headroom", "usd", "kw")


@dataclass
class ScreenResult:
    rows: dict[str, np.ndarray]  # COLUMNS, one entry per (decode curve, batch)
    decode: list[DecodeCurve]
    prefill: list[PrefillCurve]
    points: int  # (layout, batch, prefill layout, split) points evaluated
    limits: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows["dc"])

    def checks(self, req: PlanRequest) -> dict[str, np.ndarray]:
        """Each constraint's verdict per row (memory fit is built into the curves: b <= b_max)."""
        r = self.rows
        out = {
            "TPOT p90": r["tpot"] <= req.tpot_p90,
            "TTFT p90": r["ttft"] <= req.ttft_p90,
            "chips": r["chips"] <= self.limits["chips"],
            "served rate": r["rate"] > 0,
        }
        if req.rate is not None:
            out["served rate"] = r["rate"] >= req.rate * (1 - 1e-9)
        if req.budget_usd is not None:
            out["budget $"] = r["usd"] <= req.budget_usd
        if req.budget_kw is not None:
            out["budget kW"] = r["kw"] <= req.budget_kw
        return out

    def feasible(self, req: PlanRequest) -> np.ndarray:
        return np.logical_and.reduce(list(self.checks(req).values()))


def chip_limit(system: System, req: PlanRequest) -> int:
    return system.chips if req.chips is None else min(req.chips, system.chips)


def screen(
    system: System,
    req: PlanRequest,
    decode: list[DecodeCurve],
    prefill: list[PrefillCurve],
    max_chips: int,
    colocated: list[ColocatedCurve] | None = None,
) -> ScreenResult:
    """Compose decode and prefill curves into disaggregated plans, and colocated curves into colocated ones.
    Rate mode: the fewest chips that serve the rate; capacity mode: the highest rate on at most `max_chips`."""
    dpc = system.chip.dies
    usd_per_chip, kw_per_chip = system.price_usd / system.chips, system.power / system.chips / 1e3
    cols: dict[str, list[np.ndarray]] = {c: [] for c in COLUMNS}
    points = 0
    rho = req.max_utilisation
    lam_max = np.array([max_rate_under(p, req.isl, req.ttft_p90, rho) for p in prefill])  # per prefill instance
    # a prefill layout that misses the TTFT target even unloaded still makes rows (at 1% of its rate), so that
    # the TTFT check, not an empty table, reports it
    lam_max = np.where(lam_max > 0, lam_max, [0.01 * rho * p.max_rate for p in prefill])
    c_p = np.array([p.layout.dies // dpc for p in prefill], dtype=np.float64)
    t_first = np.array([float(p.time[0]) for p in prefill])
    by_sw: dict[object, np.ndarray] = {}
    for j, p in enumerate(prefill):
        by_sw.setdefault(p.software, np.zeros(len(prefill), bool))[j] = True
    for i, dc in enumerate(decode):
        same = by_sw.get(dc.software)
        if same is None or not same.any():
            continue
        pj = np.flatnonzero(same)
        lam, cp = lam_max[pj][None, :], c_p[pj][None, :]
        cd = dc.layout.dies // dpc
        r1 = (rho * dc.rate_per_instance(req.osl))[:, None]  # per decode instance at the utilisation cap
        if req.capacity_mode:
            # the split that balances the pools on max_chips chips, then its two whole-instance neighbours
            nd_star = max_chips / (cd + cp * r1 / lam)
            nd = np.stack([np.floor(nd_star), np.ceil(nd_star)], axis=-1).clip(1, max_chips // cd)
            n_p = np.floor((max_chips - nd * cd) / cp[..., None])
            rate = np.where(n_p >= 1, np.minimum(n_p * lam[..., None], nd * r1[..., None]), 0.0)
            n_p = np.maximum(n_p, 1)
            # per batch and prefill layout, the better of the two splits
            pick = np.argmax(rate - 1e-12 * (nd * cd + n_p * cp[..., None]), axis=-1)[..., None]
            rate, nd, n_p = (np.take_along_axis(a, pick, -1)[..., 0] for a in (rate, nd, n_p))
            points += rate.size * 2
        else:
            if req.rate is not None:
                rate = np.full((len(dc.batch), 1), float(req.rate))
            else:  # closed loop: C clients each cycling through prefill and decode
                rate = req.concurrency / ((req.osl - 1) * dc.tpot[:, None] + t_first[pj][None, :])
            nd = np.ceil(rate / r1 - 1e-9)
            n_p = np.ceil(rate / lam - 1e-9)
            rate, nd, n_p = np.broadcast_arrays(rate, nd, n_p)
            points += rate.size
        chips = nd * cd + n_p * cp
        # rank pairings per batch: capacity mode the highest rate, rate mode the fewest chips
        score = rate * (1 - 1e-12 * chips) if req.capacity_mode else -chips
        best = np.argmax(score, axis=1)
        take = np.arange(len(dc.batch))
        sel = pj[best]
        n_p_sel, rate_sel = n_p[take, best], rate[take, best]
        cols["dc"].append(np.full(len(take), i))
        cols["batch"].append(dc.batch)
        cols["pc"].append(sel)
        cols["n_d"].append(nd[take, best])
        cols["n_p"].append(n_p_sel)
        cols["chips"].append(chips[take, best])
        cols["rate"].append(rate_sel)
        cols["tpot"].append(dc.tpot)
        cols["headroom"].append(dc.headroom)
        ttft = np.empty(len(take))
        for j in np.unique(sel):
            m = sel == j
            ttft[m] = ttft_p90(prefill[j], rate_sel[m] / n_p_sel[m], req.isl)
        cols["ttft"].append(ttft)
    for i, cc in enumerate(colocated or (), start=len(decode)):
        points += len(cc.batch)
        for c, v in _colocated_rows(cc, i, req, system, max_chips).items():
            cols[c].append(v)
    rows = {c: (np.concatenate(v) if v else np.zeros(0)) for c, v in cols.items()}
    for c in ("dc", "pc"):
        rows[c] = rows[c].astype(np.int64)
    rows["usd"] = rows["chips"] * usd_per_chip
    rows["kw"] = rows["chips"] * kw_per_chip
    return ScreenResult(rows, [*decode, *(colocated or ())], prefill, points, {"chips": float(max_chips)})


def _colocated_rows(cc: ColocatedCurve, i: int, req: PlanRequest, system: System, max_chips: int) -> dict:
    """One row per batch: n identical colocated instances. TTFT: a heuristic like queueing.ttft_p90 (the
    current step, the prompt's own chunks, a queue as the chunk budget fills)."""
    c = cc.layout.dies // system.chip.dies
    r1 = req.max_utilisation * cc.rate_per_instance(req.osl)
    if req.capacity_mode:
        n = np.full(len(cc.batch), float(max(1, max_chips // c)))
        rate = n * r1
    else:
        rate = np.full(len(cc.batch), float(req.rate)) if req.rate is not None else (
            req.concurrency / ((req.osl - 1) * cc.tpot))
        n = np.ceil(rate / r1 - 1e-9)
    budget = cc.chunk_per_die * cc.layout.dies
    rho_c = np.minimum(rate / n * req.isl * cc.step / budget, 0.999)  # prompt tokens per step / budget
    steps = np.ceil(req.isl / budget)
    fe = FrontEndSpec()
    ttft = fe.ingress(req.isl) + fe.egress + cc.step * (steps + 0.9 + rho_c / (2 * (1 - rho_c)) * steps * np.log(10))
    return {"dc": np.full(len(cc.batch), i), "batch": cc.batch, "pc": np.full(len(cc.batch), -1), "n_d": n,
            "n_p": np.zeros(len(cc.batch)), "chips": n * c, "rate": rate, "tpot": cc.tpot, "ttft": ttft,
            "headroom": cc.headroom}  # fmt: skip


def tokens_per_chip(res: ScreenResult, req: PlanRequest) -> np.ndarray:
    """Output tokens/s per chip the plan uses."""
    r = res.rows
    return np.divide(r["rate"] * req.osl, r["chips"], out=np.zeros(len(res)), where=r["chips"] > 0)


def tokens_per_user(res: ScreenResult) -> np.ndarray:
    """Output tokens/s one sequence sees at the batch cap: 1 / TPOT."""
    return 1.0 / res.rows["tpot"]


def ranked(res: ScreenResult, req: PlanRequest, idx: np.ndarray) -> np.ndarray:
    """`idx` best first. Rate mode: most tokens/s per chip (fewest chips); capacity mode: most tokens/s in
    all, then per chip. Ties: lower TPOT, then lower TTFT."""
    r, per_chip = res.rows, tokens_per_chip(res, req)
    primary = r["rate"] if req.capacity_mode else per_chip
    keys = (r["ttft"][idx], r["tpot"][idx], -np.round(per_chip[idx], 6), -np.round(primary[idx], 6))
    return idx[np.lexsort(keys)]


def best_rows(res: ScreenResult, req: PlanRequest, k: int, mask: np.ndarray | None = None) -> list[int]:
    """The k best feasible rows, at most one per decode curve (layout and software) so the candidates differ."""
    ok = res.feasible(req) if mask is None else mask
    out, seen = [], set()
    for i in ranked(res, req, np.flatnonzero(ok)):
        key = int(res.rows["dc"][i])
        if key not in seen:
            seen.add(key)
            out.append(int(i))
            if len(out) == k:
                break
    return out
