"""The whole search: layouts -> anchor curves -> numpy screen -> exact polish -> simulator confirmation."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf import decode_step
from cloudmatrix.plan.search.confirm import confirm, scenario_toml
from cloudmatrix.plan.search.curves import (
    ColocatedCurve,
    DecodeCurve,
    PrefillCurve,
    colocated_curve,
    decode_curve,
    pool_costs,
    prefill_curve,
)
from cloudmatrix.plan.search.frontier import pareto
from cloudmatrix.plan.search.infeasible import diagnose
from cloudmatrix.plan.search.plans import Plan
from cloudmatrix.plan.search.request import PlanRequest
from cloudmatrix.plan.search.screen import (
    ScreenResult,
    best_rows,
    chip_limit,
    screen,
    tokens_per_chip,
    tokens_per_user,
)
from cloudmatrix.plan.search.space import (
    COLOCATED_CHUNK_PER_DIE,
    PREFILL_TOKENS_PER_DIE,
    InstanceLayout,
    Software,
    instance_layouts,
    software_options,
)
from cloudmatrix.specs.hardware import System, load_system
from cloudmatrix.specs.model import ModelSpec, load_model

MAX_PREFILL_DIES = 64  # prefill instances beyond this trade TTFT for nothing (EP32 is the paper's)
POLISH_LAYOUTS = 6  # decode layouts re-costed at every batch by the step model after the screen

Progress = Callable[[str, int, int], None]  # (what, done, total)


@dataclass
class Space:
    """The layouts tried on one system (tests pass a small one)."""

    software: list[Software]
    decode: list[InstanceLayout] | None = None  # None: every valid layout per software
    prefill: list[InstanceLayout] | None = None
    prefill_tokens: tuple[int, ...] = PREFILL_TOKENS_PER_DIE
    colocated: list[InstanceLayout] | None = None  # None: the decode layouts (when the request allows colocated)
    chunks: tuple[int, ...] = COLOCATED_CHUNK_PER_DIE


@dataclass
class SystemPlan:
    key: str
    system: System
    screen: ScreenResult
    candidates: list[Plan] = field(default_factory=list)
    best: Plan | None = None
    diagnosis: str | None = None
    frontier: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))
    anchors: int = 0
    screen_s: float = 0.0


def sized_system(key: str, req: PlanRequest) -> System:
    """The catalog system; one bought by the node (HGX) is sized to --chips."""
    s = load_system(key)
    if req.chips is not None and s.spec.power is None and s.spec.price_usd is None:
        s = s.with_nodes(math.ceil(req.chips / s.spec.chips_per_node))
    return s


def default_space(model: ModelSpec, system: System, req: PlanRequest) -> Space:
    return Space(software_options(model, system, req.mtp_acceptance))


def build_curves(
    model: ModelSpec, system: System, req: PlanRequest, space: Space, max_chips: int, progress: Progress | None = None
) -> tuple[list[DecodeCurve], list[PrefillCurve], list[ColocatedCurve], int]:
    max_dies = max_chips * system.chip.dies
    jobs = []
    disagg, coloc = "disaggregated" in req.modes, "colocated" in req.modes
    for sw in space.software:
        dec = space.decode if space.decode is not None else instance_layouts(model, system, sw, max_dies)
        pre = space.prefill if space.prefill is not None else instance_layouts(
            model, system, sw, min(max_dies, MAX_PREFILL_DIES)
        )
        pre = [p for p in pre if p.attn_tp == 1 and p.moe_tp == 1]  # prefill: SP attention, pure EP
        if disagg:
            jobs += [("d", sw, lay, 0) for lay in dec]
            jobs += [("p", sw, lay, t) for lay in pre for t in space.prefill_tokens]
        if coloc:
            # by default colocated instances run pure DP attention and pure EP (or TP on a dense model)
            col = space.colocated if space.colocated is not None else [
                lay for lay in dec if lay.moe_tp == 1 and (lay.attn_tp == 1 or not model.is_moe)]
            jobs += [("c", sw, lay, t) for lay in col for t in space.chunks]
    dcs, pcs, ccs, anchors = [], [], [], 0
    for n, (kind, sw, lay, t) in enumerate(jobs):
        if kind == "d":
            c = decode_curve(model, system, lay, sw, req.isl, req.osl)
            if c is not None:
                dcs.append(c)
                anchors += c.anchors
        elif kind == "p":
            c = prefill_curve(model, system, lay, sw, t, req.isl)
            if c is not None:
                pcs.append(c)
                anchors += c.anchors
        else:
            c = colocated_curve(model, system, lay, sw, t, req.isl, req.osl)
            if c is not None:
                ccs.append(c)
                anchors += c.anchors
        if progress and (n % 16 == 0 or n == len(jobs) - 1):
            progress("cost model at anchors", n + 1, len(jobs))
    return dcs, pcs, ccs, anchors


def _polish(
    model: ModelSpec, system: System, req: PlanRequest, res: ScreenResult, max_chips: int
) -> ScreenResult | None:
    """The best decode layouts re-costed by the step model at every batch (no interpolation), re-screened."""
    top = best_rows(res, req, POLISH_LAYOUTS)
    if not top:
        return None
    dec, col = [], []
    for i in top:
        c = res.decode[int(res.rows["dc"][i])]
        if isinstance(c, ColocatedCurve):
            col.append(colocated_curve(model, system, c.layout, c.software, c.chunk_per_die, req.isl, req.osl, True))
        else:
            dec.append(decode_curve(model, system, c.layout, c.software, req.isl, req.osl, exact=True))
    dec, col = [c for c in dec if c is not None], [c for c in col if c is not None]
    return screen(system, req, dec, res.prefill, max_chips, col)


def _plan_of(key: str, system: System, model: ModelSpec, req: PlanRequest, res: ScreenResult, i: int) -> Plan:
    r = res.rows
    dc = res.decode[int(r["dc"][i])]
    pc = None if r["pc"][i] < 0 else res.prefill[int(r["pc"][i])]
    b = int(r["batch"][i])
    pc_ = pool_costs(model, system, dc.layout, dc.software)
    dep = pc_.dep.with_(imbalance=pc_.imbalance(b * (1 + pc_.dep.mtp_depth)))  # as the simulator costs it
    op = decode_step(model, system, dep, b, req.isl + req.osl / 2, check_memory=False).dominant()
    return Plan(
        key, system, model, dc.software, dc.layout, b, int(r["n_d"][i]), pc and pc.layout,
        pc.tokens_per_die if pc else dc.chunk_per_die,
        int(r["n_p"][i]), float(r["rate"][i]), float(r["tpot"][i]), float(r["ttft"][i]), float(r["headroom"][i]),
        req.osl, bounding_op=f"{op.name} ({op.bound}, {op.time / dc.step[b - 1]:.0%} of the step)",
    )  # fmt: skip


def plan_system(
    key: str, req: PlanRequest, space: Space | None = None, progress: Progress | None = None
) -> SystemPlan:
    """Screen and polish one system (no simulation)."""
    t0 = time.perf_counter()
    model, system = load_model(req.model), sized_system(key, req)
    max_chips = chip_limit(system, req)
    space = space or default_space(model, system, req)
    dcs, pcs, ccs, anchors = build_curves(model, system, req, space, max_chips, progress)
    res = screen(system, req, dcs, pcs, max_chips, ccs)
    sp = SystemPlan(key, system, res, anchors=anchors)
    ok = res.feasible(req)
    # the frontier: plans meeting every constraint but TPOT (the chart shows where the TPOT target cuts)
    checks = res.checks(req)
    front = np.logical_and.reduce([v for k, v in checks.items() if k != "TPOT p90"]) if len(res) else ok
    x, y = tokens_per_chip(res, req)[front], tokens_per_user(res)[front]
    idx = pareto(x, y)
    sp.frontier = (x[idx], y[idx])
    if not ok.any():
        sp.diagnosis = diagnose(res, req, key)
        sp.screen_s = time.perf_counter() - t0
        return sp
    polished = _polish(model, system, req, res, max_chips)
    final = polished if polished is not None and polished.feasible(req).any() else res
    sp.candidates = [_plan_of(key, system, model, req, final, i) for i in best_rows(final, req, req.top_k)]
    sp.best = sp.candidates[0] if sp.candidates else None
    sp.screen_s = time.perf_counter() - t0
    return sp


@dataclass
class PlanResult:
    request: PlanRequest
    systems: list[SystemPlan]
    confirm_s: float = 0.0

    @property
    def points(self) -> int:
        return sum(s.screen.points for s in self.systems)


def run_plan(
    req: PlanRequest,
    spaces: dict[str, Space] | None = None,
    progress: Progress | None = None,
    use_ray: bool = False,
    ray_address: str | None = None,
) -> PlanResult:
    """Plan every requested system, confirm the candidates by simulation, pick the best confirmed plan each."""
    req.validate()
    systems = [plan_system(k, req, (spaces or {}).get(k), progress) for k in req.systems]
    if all(s.best is None for s in systems):
        raise CloudMatrixError(" | ".join(s.diagnosis or f"{s.key}: no plan" for s in systems))
    result = PlanResult(req, systems)
    if not req.confirm:
        return result
    t0 = time.perf_counter()
    jobs = [(s, p) for s in systems for p in s.candidates]
    total = len(jobs)
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress:
            progress("simulating candidates", done[0], total)

    outs = confirm([scenario_toml(p, req) for _, p in jobs], req.workers, ray_address, use_ray, tick)
    for (_, p), o in zip(jobs, outs, strict=True):
        p.confirmed = o
    for s in systems:
        good = [p for p in s.candidates if p.meets_slo]
        s.best = good[0] if good else None
        if s.best is None and s.candidates:
            c = s.candidates[0].confirmed or {}
            s.diagnosis = (
                f"{s.key}: the screen's {len(s.candidates)} best plans miss the SLO when simulated (the best: TTFT "
                f"p90 {c.get('ttft_p90_s', math.nan):.3g} s, TPOT p90 {c.get('tpot_p90_s', math.nan) * 1e3:.3g} ms"
                f"{'; ' + c['error'] if 'error' in c else ''}); relax --ttft-p90/--tpot-p90, lower the load or "
                "raise --top-k"
            )
    result.confirm_s = time.perf_counter() - t0
    if all(s.best is None for s in systems):
        raise CloudMatrixError(" | ".join(s.diagnosis or f"{s.key}: no plan" for s in systems))
    return result
