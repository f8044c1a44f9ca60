"""The step model at a few anchor points per layout, and the fine batch grid in numpy between them.

The anchors are costed with `sim.costs.PoolCosts`, the very call the simulator makes per step (the
cost model plus the EPLB placement's step imbalance), so the screen and the confirmation price a step
the same way. Between anchors the step time is interpolated linearly: a decode step is weights and
fixed costs plus work linear in the batch, with slowly bending efficiencies (docs/plan.md measures
the interpolation error against the step model at every batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf import Deployment
from cloudmatrix.perf.memory import memory_per_die, usable_hbm
from cloudmatrix.plan.search.space import InstanceLayout, Software
from cloudmatrix.sim.costs import PoolCosts
from cloudmatrix.sim.scenario import ExpertsSpec
from cloudmatrix.specs.backend import load_backend
from cloudmatrix.specs.hardware import System
from cloudmatrix.specs.model import ModelSpec

MAX_BATCH_PER_DIE = 512  # the cap of plan.sweep.DECODE_BATCHES (DeepEP-style buffers are sized per rank)
DECODE_ANCHORS = (1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256, 384, 512)


class _SharedPlacementCosts(PoolCosts):
    """PoolCosts whose EPLB placement is shared by every layout with the same routed dies and slots per die (it
    depends on nothing else here: uniform popularity, seed 0), so its memoised expert-load statistics are
    computed once for all of them; the step costing is the simulator's, inherited unchanged."""

    _placements: dict[tuple, tuple[object, ModelSpec]] = {}

    def __init__(self, model: ModelSpec, system: System, dep: Deployment):
        moe = model.is_moe and dep.ep_degree > 1
        key = (id(model), dep.routed_dies, dep.slots_per_routed_die(model)) if moe else None
        hit = self._placements.get(key) if key else None
        if hit is not None and hit[1] is model:
            super().__init__(model, system, dep, _CONTIGUOUS)  # the cheap placement, replaced at once
            self.placement = hit[0]
            return
        super().__init__(model, system, dep, ExpertsSpec())
        if key:
            self._placements[key] = (self.placement, model)  # holding the model pins its id


    _imbalances: dict[tuple, float] = {}

    def imbalance(self, tokens_per_die: float) -> float:
        """The simulator's step imbalance, remembered per (placement, routed tokens) across layouts."""
        if self.placement is None:
            return 1.0
        k = (id(self.placement), round(tokens_per_die * self.dep.dies))
        hit = self._imbalances.get(k)
        if hit is None:
            hit = self._imbalances[k] = super().imbalance(tokens_per_die)
        return hit


_CONTIGUOUS = ExpertsSpec(placement="none")


def pool_costs(model: ModelSpec, system: System, lay: InstanceLayout, sw: Software) -> PoolCosts:
    return _SharedPlacementCosts(model, system, lay.deployment(model, sw, system))


@dataclass
class DecodeCurve:
    """Decode of one instance layout at every batch per die 1..b_max (index i is batch i + 1)."""

    layout: InstanceLayout
    software: Software
    batch: np.ndarray  # 1..b_max
    step: np.ndarray  # seconds per decode step (interpolated between anchors)
    tpot: np.ndarray  # seconds per output token of one sequence
    headroom: np.ndarray  # bytes per die left at this batch with every sequence at its full context
    anchors: int  # step-model calls made

    def rate_per_instance(self, osl: int) -> np.ndarray:
        """Requests/s one instance finishes with every slot busy: slots / decode time of one request."""
        return self.layout.dies * self.batch / ((osl - 1) * self.tpot)


def memory_line(model: ModelSpec, system: System, pc: PoolCosts, tokens_per_seq: int) -> tuple[float, float]:
    """(bytes per die with no sequence, bytes per extra sequence at `tokens_per_seq` of KV): memory is linear."""
    dep = pc.dep
    flight = 1 + dep.mtp_depth
    m0 = sum(memory_per_die(model, dep, 0.0, 0.0, pc.disp_bytes).values())
    m1 = sum(memory_per_die(model, dep, tokens_per_seq, flight, pc.disp_bytes).values())
    return usable_hbm(system, dep) - m0, m1 - m0


def decode_curve(
    model: ModelSpec, system: System, lay: InstanceLayout, sw: Software, isl: int, osl: int, exact: bool = False
) -> DecodeCurve | None:
    """None when not even one sequence per die fits. `exact`: the step model at every batch (brute force)."""
    pc = pool_costs(model, system, lay, sw)
    free, per_seq = memory_line(model, system, pc, isl + osl)
    b_max = min(MAX_BATCH_PER_DIE, math.floor(free / per_seq)) if per_seq > 0 else MAX_BATCH_PER_DIE
    if b_max < 1:
        return None
    ctx = isl + osl / 2  # mean context over a request's decode
    batch = np.arange(1, b_max + 1, dtype=np.float64)
    pts = batch.astype(int).tolist() if exact else sorted({a for a in DECODE_ANCHORS if a <= b_max} | {b_max})
    times = np.array([pc.decode_time(b, ctx) for b in pts])
    step = np.interp(batch, np.asarray(pts, dtype=np.float64), times)
    tpot = step / pc.dep.tokens_per_step()
    return DecodeCurve(lay, sw, batch, step, tpot, free - batch * per_seq, len(pts))


@dataclass
class PrefillCurve:
    """Prefill of one instance layout at a token budget: batch time by prompts per batch, 1..k_max."""

    layout: InstanceLayout
    software: Software
    tokens_per_die: int
    k: np.ndarray  # prompts per batch, 1..k_max
    time: np.ndarray  # seconds per batch
    anchors: int

    @property
    def k_max(self) -> int:
        return int(self.k[-1])

    @property
    def max_rate(self) -> float:
        """Requests/s of one instance with full batches back to back."""
        return self.k_max / float(self.time[-1])


def prefill_curve(
    model: ModelSpec, system: System, lay: InstanceLayout, sw: Software, tokens_per_die: int, isl: int
) -> PrefillCurve | None:
    """None when the budget does not fit in HBM or holds less than one whole prompt (chunked prefill across
    batches is left to the colocated mode)."""
    k_max = tokens_per_die * lay.dies // isl
    if k_max < 1:
        return None
    pc = pool_costs(model, system, lay, sw)
    try:
        pc.check_prefill_fit(tokens_per_die, "prefill")
    except CloudMatrixError:
        return None
    pts = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if k < k_max} | {k_max})
    times = np.array([pc.prefill_time(k * isl, k * isl * (isl + 1) / 2, isl) for k in pts])
    k = np.arange(1, k_max + 1, dtype=np.float64)
    return PrefillCurve(lay, sw, tokens_per_die, k, np.interp(k, np.asarray(pts, dtype=np.float64), times), len(pts))


@dataclass
class ColocatedCurve:
    """Colocated instances (chunked prefill in the decode steps) at every batch per die 1..b_max, each step
    carrying the prompt tokens that keep its slots full: c(b) = dies * b * tokens/step * isl / (osl - 1)."""

    layout: InstanceLayout
    software: Software
    chunk_per_die: int  # the chunked-prefill budget per die per step
    batch: np.ndarray
    step: np.ndarray  # decode of b per die plus the prefill chunk that feeds them
    tpot: np.ndarray
    headroom: np.ndarray
    chunk_tokens: np.ndarray  # prompt tokens per step per instance at steady state
    anchors: int

    def rate_per_instance(self, osl: int) -> np.ndarray:
        return self.layout.dies * self.batch / ((osl - 1) * self.tpot)


def colocated_curve(
    model: ModelSpec, system: System, lay: InstanceLayout, sw: Software, chunk_per_die: int, isl: int, osl: int,
    exact: bool = False,
) -> ColocatedCurve | None:  # fmt: skip
    """None when no batch fits, or the chunk budget cannot feed even one sequence per die."""
    pc = pool_costs(model, system, lay, sw)
    dep = pc.dep
    tps = dep.tokens_per_step()
    free, per_seq = memory_line(model, system, pc, isl + osl)
    chunk_mem = sum(memory_per_die(model, dep, 0.0, chunk_per_die, pc.disp_bytes).values()) - sum(
        memory_per_die(model, dep, 0.0, 0.0, pc.disp_bytes).values()
    )
    free -= chunk_mem
    feed = math.floor(chunk_per_die * (osl - 1) / (tps * isl))  # slots one step's budget keeps full
    b_max = min(MAX_BATCH_PER_DIE, feed, math.floor(free / per_seq) if per_seq > 0 else MAX_BATCH_PER_DIE)
    if b_max < 1:
        return None
    try:
        pc.check_prefill_fit(chunk_per_die, "colocated chunk")
    except CloudMatrixError:
        return None
    batch = np.arange(1, b_max + 1, dtype=np.float64)
    pts = batch.astype(int).tolist() if exact else sorted({a for a in DECODE_ANCHORS if a <= b_max} | {b_max})
    ctx = isl + osl / 2
    # the stack's colocated schedule (specs/catalog/backends/*.toml [scheduling]): a mixed step is one forward
    # over the chunk and the decode tokens (perf/mixed.py); a separate prefill step adds its own forward
    mixed = load_backend(dep.backend).scheduling.prefill == "mixed"
    times = []
    for b in pts:
        c = max(1, round(lay.dies * b * tps * isl / (osl - 1)))
        if mixed:
            times.append(pc.mixed_time(b, ctx, c, c * (isl + 1) / 2, min(c, isl)))
        else:
            times.append(pc.decode_time(b, ctx) + pc.prefill_time(c, c * (isl + 1) / 2, min(c, isl)))
    step = np.interp(batch, np.asarray(pts, dtype=np.float64), np.asarray(times))
    chunk = lay.dies * batch * tps * isl / (osl - 1)
    return ColocatedCurve(lay, sw, chunk_per_die, batch, step, step / tps, free - batch * per_seq, chunk, len(pts))
