"""Serve one target on several systems: the best decode batch under the TPOT SLO, the prefill rate, the pool split
that balances them, then system-level throughput, cost and energy per output token.

Every system is costed with the same model (cloudmatrix.perf), so ratios between systems are more robust
than the absolute figures (see docs/compare.md for the calibration gap).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.plan.economics import (
    Cost,
    Economics,
    PoolSplit,
    cost_per_million_tokens,
    split_fixed_system,
    split_sized_cluster,
)
from cloudmatrix.plan.layouts import PREFILL_TOKENS_PER_CHIP, InstanceShape, Layout, layout_for
from cloudmatrix.plan.sweep import DecodePoint, PrefillPoint, best_under_slo, decode_curve, prefill_point
from cloudmatrix.specs.hardware import System, load_system
from cloudmatrix.specs.model import ModelSpec, load_model

DEFAULT_SYSTEMS = ("cloudmatrix384", "gb200-nvl72", "hgx-h800", "hgx-h100")


@dataclass(frozen=True)
class ServingTarget:
    """What every system must serve: one model, one request shape, one TPOT SLO (a steady-state target for the
    cost model; the simulator's request stream is `cloudmatrix.sim`'s Workload)."""

    model: str = "deepseek-r1"
    input_len: int = 4096
    output_len: int = 256
    tpot_slo: float = 0.050  # seconds

    def validate(self) -> None:
        if self.input_len <= 0 or self.output_len <= 0:
            raise CloudMatrixError(
                f"input and output lengths must be positive, got {self.input_len} and {self.output_len}"
            )
        if not (self.tpot_slo > 0 and math.isfinite(self.tpot_slo)):
            raise CloudMatrixError(f"the TPOT SLO must be positive and finite (seconds), got {self.tpot_slo}")

    @property
    def kv_len(self) -> float:
        """Mean context of a sequence during its decode: the prompt plus half the output."""
        return self.input_len + self.output_len / 2


@dataclass
class DecodeOption:
    """One decode instance shape the pool-split sweep tried."""

    shape: InstanceShape
    curve: list[DecodePoint] = field(default_factory=list)
    best: DecodePoint | None = None
    split: PoolSplit | None = None
    note: str = ""  # why it was not feasible


@dataclass
class SystemResult:
    layout: Layout
    system: System  # as costed: HGX clusters sized to the split
    prefill_shape: InstanceShape
    prefill: PrefillPoint
    decode_shape: InstanceShape
    curve: list[DecodePoint]
    decode: DecodePoint
    split: PoolSplit
    cost: Cost
    options: list[DecodeOption]

    @property
    def chips(self) -> int:
        return self.system.chips

    @property
    def output_tokens_per_s(self) -> float:
        return self.split.output_tokens_per_s

    @property
    def output_tokens_per_s_per_chip(self) -> float:
        return self.output_tokens_per_s / self.chips

    @property
    def per_kw(self) -> float:
        return self.output_tokens_per_s / (self.system.power / 1e3)

    @property
    def per_musd(self) -> float:
        return self.output_tokens_per_s / (self.system.price_usd / 1e6)

    def to_dict(self) -> dict:
        d = self.decode
        s = self.split
        return {
            "system": self.layout.key,
            "chip": self.system.chip.name,
            "chips": self.chips,
            "precision": self.layout.precision_label,
            "prefill_instance": {"dies": self.prefill_shape.dies, "ep": self.prefill_shape.ep},
            "decode_instance": {"dies": self.decode_shape.dies, "ep": self.decode_shape.ep},
            "decode_batch_per_die": d.batch_per_die,
            "tpot_s": d.tpot,
            "decode_tokens_per_s_per_chip": d.tokens_per_s_per_chip,
            "prefill_tokens_per_s_per_chip": self.prefill.tokens_per_s_per_chip,
            "prefill_tokens_per_die": self.prefill.tokens_per_die,
            "split": {
                "prefill_instances": s.prefill_instances,
                "decode_instances": s.decode_instances,
                "prefill_chips": s.prefill_chips,
                "decode_chips": s.decode_chips,
                "idle_chips": self.chips - s.chips,
                "bottleneck": s.bottleneck,
                "ideal_prefill_fraction": s.ideal_prefill_fraction,
                "requests_per_s": s.requests_per_s,
            },
            "output_tokens_per_s": self.output_tokens_per_s,
            "output_tokens_per_s_per_chip": self.output_tokens_per_s_per_chip,
            "output_tokens_per_s_per_kw": self.per_kw,
            "output_tokens_per_s_per_musd": self.per_musd,
            "usd_per_million_output_tokens": self.cost.usd_per_million_tokens,
            "capex_usd_per_hour": self.cost.capex_usd_per_hour,
            "energy_usd_per_hour": self.cost.energy_usd_per_hour,
            "joules_per_output_token": self.cost.joules_per_token,
            "hbm_headroom_gb_per_die": d.hbm_headroom / 1e9,
            "power_w": self.system.power,
            "price_usd": self.system.price_usd,
            "sources": list(self.layout.sources),
        }


def _chips(shape: InstanceShape, system: System) -> int:
    if shape.dies % system.chip.dies:
        raise CloudMatrixError(f"an instance of {shape.dies} dies is not whole {system.chip.name} chips")
    return shape.dies // system.chip.dies


def evaluate_system(layout: Layout, model: ModelSpec, target: ServingTarget, econ: Economics) -> SystemResult:
    base = load_system(layout.system)
    shapes = (layout.prefill, *layout.decode_options)
    if layout.sized_by_layout:  # large enough to hold any one instance while costing steps
        need = max(s.dies for s in shapes) / base.chip.dies
        base = base.with_nodes(max(base.nodes, math.ceil(need / base.spec.chips_per_node)))
    pre_dep = layout.prefill.deployment(model, layout)
    prefill = prefill_point(model, base, pre_dep, target.input_len, PREFILL_TOKENS_PER_CHIP)
    sp = _chips(layout.prefill, base)
    options = []
    for shape in layout.decode_options:
        opt = DecodeOption(shape)
        options.append(opt)
        try:
            opt.curve = decode_curve(model, base, shape.deployment(model, layout), target.kv_len)
        except CloudMatrixError as e:
            opt.note = str(e)
            continue
        opt.best = best_under_slo(opt.curve, target.tpot_slo)
        if opt.best is None:
            opt.note = "no batch fits in HBM" if not opt.curve else "TPOT above the SLO even at batch 1 per die"
            continue
        sd = _chips(shape, base)
        rp, rd = prefill.tokens_per_s_per_chip, opt.best.tokens_per_s_per_chip
        try:
            if layout.sized_by_layout:
                opt.split = split_sized_cluster(sp, sd, rp, rd, target.input_len, target.output_len)
            else:
                opt.split = split_fixed_system(base.chips, sp, sd, rp, rd, target.input_len, target.output_len)
        except CloudMatrixError as e:
            opt.note = str(e)
    feasible = [o for o in options if o.split is not None]
    if not feasible:
        why = "; ".join(f"decode EP{o.shape.ep}: {o.note}" for o in options)
        raise CloudMatrixError(f"{layout.key}: no decode layout meets TPOT <= {target.tpot_slo * 1e3:g} ms ({why})")

    def per_chip(o: DecodeOption) -> float:
        chips = o.split.chips if layout.sized_by_layout else base.chips
        return o.split.output_tokens_per_s / chips

    best = max(feasible, key=per_chip)  # ties keep the published (first) layout
    system = base
    if layout.sized_by_layout:
        system = base.with_nodes(best.split.chips // base.spec.chips_per_node)
    cost = cost_per_million_tokens(best.split.output_tokens_per_s, system.price_usd, system.power, econ)
    return SystemResult(
        layout, system, layout.prefill, prefill, best.shape, best.curve, best.best, best.split, cost, options
    )


def evaluate_systems(systems: Sequence[str], target: ServingTarget, econ: Economics) -> list[SystemResult]:
    """One SystemResult per system key (a catalog name, optionally ':precision')."""
    target.validate()
    econ.validate()
    if not systems:
        raise CloudMatrixError("give at least one system to compare")
    layouts = [layout_for(k) for k in systems]
    model = load_model(target.model)
    return [evaluate_system(layout, model, target, econ) for layout in layouts]
