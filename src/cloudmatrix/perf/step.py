"""Assemble a step from layer groups: overlap per group, aggregate rows, roofline limit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cloudmatrix.perf.breakdown import OpRow, StepBreakdown
from cloudmatrix.perf.op import OpCost
from cloudmatrix.perf.overlap import CommCores, layer_time


@dataclass(frozen=True)
class LayerGroup:
    name: str  # "moe_layer", "dense_layer", "mtp_layer", "head"
    count: int  # how many such layers per step
    ops: Sequence[OpCost]  # one microbatch through one layer, on one die
    overlappable: bool = True  # False: runs once per microbatch, serially (LM head, sampling)


def assemble(
    phase: str,
    system: str,
    model: str,
    groups: Sequence[LayerGroup],
    microbatches: int,
    overlap_mode: str,
    attn_share: float,
    comm_cores: CommCores | None = None,
    **fields,
) -> StepBreakdown:
    step = fill = 0.0
    for g in groups:
        if g.count == 0:
            continue
        if g.overlappable:
            per_layer, f = layer_time(g.ops, microbatches, overlap_mode, attn_share, comm_cores)
            fill = max(fill, f)
        else:
            per_layer = microbatches * sum(op.time for op in g.ops)
        step += g.count * per_layer
    return StepBreakdown(
        phase=phase,
        system=system,
        model=model,
        step_time=step + fill,
        tabulate=lambda: _table(groups, microbatches),
        **fields,
    )


def _table(groups: Sequence[LayerGroup], microbatches: int) -> tuple[list[OpRow], float, float]:
    """(rows, serial time, roofline limit) of a step: each op aggregated over its layers and microbatches."""
    serial = limit = 0.0
    rows: dict[tuple[str, str], OpRow] = {}
    for g in groups:
        if g.count == 0:
            continue
        runs = g.count * microbatches
        for op in g.ops:
            t = op.time
            serial += runs * t
            if op.kind != "comm":
                limit += runs * op.limit_time
            key = (g.name, op.name)
            lim = runs * op.limit_time
            row = OpRow(op.name, g.name, runs, runs * t, runs * op.flops, runs * op.bytes, op.bound, lim)
            prev = rows.get(key)
            if prev:  # the same op twice in one group adds up
                row = OpRow(
                    op.name,
                    g.name,
                    prev.runs + runs,
                    prev.time + row.time,
                    prev.flops + row.flops,
                    prev.bytes + row.bytes,
                    op.bound,
                    prev.limit + row.limit,
                )
            rows[key] = row
    return list(rows.values()), serial, limit
