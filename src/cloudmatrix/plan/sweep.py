"""Sweeps over the cost model: decode batch per die against a TPOT SLO, and the prefill rate of an instance."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf import Deployment, decode_step, prefill_step
from cloudmatrix.perf.memory import usable_hbm
from cloudmatrix.specs.hardware import System
from cloudmatrix.specs.model import ModelSpec

# Sequences per die tried in decode. 512 is a cap of this sweep (DeepEP-style low-latency kernels size their
# buffers per rank for a few hundred tokens); past it, memory or the SLO binds on every catalog system.
DECODE_BATCHES: tuple[int, ...] = (
    1,
    2,
    4,
    8,
    12,
    16,
    24,
    32,
    40,
    48,
    56,
    64,
    80,
    96,
    112,
    128,
    160,
    192,
    224,
    256,
    320,
    384,
    448,
    512,
)


@dataclass(frozen=True)
class DecodePoint:
    batch_per_die: int
    tpot: float  # seconds
    tokens_per_s_per_chip: float
    hbm_used: float  # bytes per die
    hbm_headroom: float  # bytes per die left of the usable HBM


def decode_curve(
    model: ModelSpec, system: System, dep: Deployment, kv_len: float, batches: Sequence[int] = DECODE_BATCHES
) -> list[DecodePoint]:
    """Decode throughput and TPOT per batch size; batches that do not fit in HBM are left out (the curve
    stops there, since memory grows with the batch)."""
    dep.validate(model, system)  # a wrong layout is an error, not an empty curve
    out = []
    for b in batches:
        try:
            s = decode_step(model, system, dep, b, kv_len)
        except CloudMatrixError:
            break  # does not fit: larger batches will not either
        used = sum(s.memory.values())
        out.append(DecodePoint(b, s.tpot, s.tokens_per_s_per_chip, used, usable_hbm(system, dep) - used))
    return out


def best_under_slo(curve: Sequence[DecodePoint], tpot_slo: float) -> DecodePoint | None:
    """The point with the most tokens/s per chip whose TPOT meets the SLO (None if none does)."""
    ok = [p for p in curve if p.tpot <= tpot_slo]
    return max(ok, key=lambda p: p.tokens_per_s_per_chip) if ok else None


@dataclass(frozen=True)
class PrefillPoint:
    tokens_per_die: float
    step_time: float  # seconds per batch
    tokens_per_s_per_chip: float


def prefill_point(
    model: ModelSpec, system: System, dep: Deployment, prompt_len: float, tokens_per_chip: float
) -> PrefillPoint:
    """Prefill rate at `tokens_per_chip` prompt tokens per chip per batch (at least one prompt per die);
    halves the batch until it fits in HBM."""
    per_die = max(tokens_per_chip / system.chip.dies, prompt_len)
    while True:
        try:
            s = prefill_step(model, system, dep, per_die, prompt_len)
            return PrefillPoint(per_die, s.step_time, s.tokens_per_s_per_chip)
        except CloudMatrixError:
            if per_die <= prompt_len:
                raise
            per_die = max(per_die / 2, prompt_len)
