"""Assemble a step from layer groups: overlap per group, host dispatch, aggregate rows, roofline limit.

Host dispatch (`perf/host.py`): a graphed step adds its graph launch. An eager step's host issues each
layer's ops while the device runs those already issued (launches are asynchronous), so a layer costs
max(device, host), whichever paces it. A group's layers are identical, so per layer and per group give the
same maximum; a host that ran ahead during a device-bound group is not credited to the next group, so the
step lies at or above max(total device, total host), the bound for a host that may run ahead without limit.
A CPU engine runs both on one core ("serial"): they add."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cloudmatrix.perf.breakdown import OpRow, StepBreakdown
from cloudmatrix.perf.host import HostDispatch
from cloudmatrix.perf.op import OpCost
from cloudmatrix.perf.overlap import CommCores, layer_time


@dataclass(frozen=True)
class LayerGroup:
    name: str  # "moe_layer", "dense_layer", "mtp_layer", "head"
    count: int  # how many such layers per step
    ops: Sequence[OpCost]  # one microbatch through one layer, on one die
    overlappable: bool = True  # False: runs once per microbatch, serially (LM head, sampling)
    # runs once per step on the microbatches merged again (ops built for the whole batch): the LM head after the
    # layers, as SGLang's two-batch overlap merges its halves before the head (two_batch_overlap.py)
    merged: bool = False


def assemble(
    phase: str,
    system: str,
    model: str,
    groups: Sequence[LayerGroup],
    microbatches: int,
    overlap_mode: str,
    attn_share: float,
    comm_cores: CommCores | None = None,
    host: HostDispatch | None = None,
    **fields,
) -> StepBreakdown:
    step = fill = 0.0
    eager = host is not None and host.mode == "eager"
    serial = eager and host.overlap == "serial"
    for g in groups:
        if g.count == 0:
            continue
        if g.overlappable:
            per_layer, f = layer_time(g.ops, microbatches, overlap_mode, attn_share, comm_cores)
            fill = max(fill, f)
        else:
            per_layer = (1 if g.merged else microbatches) * sum(op.time for op in g.ops)
        if eager:
            h = host.per_layer[_host_key(g)]
            per_layer = per_layer + h if serial else max(per_layer, h)
        step += g.count * per_layer
    if host is not None:
        step += host.per_step
    return StepBreakdown(
        phase=phase,
        system=system,
        model=model,
        step_time=step + fill,
        tabulate=lambda: _table(groups, microbatches),
        host_time=0.0 if host is None else host_time(groups, host),
        **fields,
    )


def _host_key(g: LayerGroup) -> str:
    return "head_merged" if g.merged else g.name


def host_time(groups: Sequence[LayerGroup], host: HostDispatch) -> float:
    """Seconds the host spends issuing the step (overlapped with the device when asynchronous)."""
    return host.per_step + sum(g.count * host.per_layer.get(_host_key(g), 0.0) for g in groups)


def _table(groups: Sequence[LayerGroup], microbatches: int) -> tuple[list[OpRow], float, float]:
    """(rows, serial time, roofline limit) of a step: each op aggregated over its layers and microbatches."""
    serial = limit = 0.0
    rows: dict[tuple[str, str], OpRow] = {}
    for g in groups:
        if g.count == 0:
            continue
        runs = g.count * (1 if g.merged else microbatches)
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
