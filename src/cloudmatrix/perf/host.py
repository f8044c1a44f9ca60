"""Host dispatch time of a step: what the serving stack's CPU spends issuing the step's kernels.

A graphed step (decode in a CUDA/CANN graph) costs the host one graph launch. An eager step costs it
every op: (ops per layer x layers + ops per step) x seconds per op, from the deployment's backend
profile (`specs/backend.py`). `perf/step.py` overlaps this with the device time layer by layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudmatrix.specs.backend import LAYER_GROUPS, load_backend


@dataclass(frozen=True, slots=True)
class HostDispatch:
    """Host seconds of one step: per layer of each group (every microbatch together) and once per step."""

    mode: str  # "graph" or "eager"
    overlap: str  # "async": host runs ahead of the device, a layer costs the larger; "serial": they add
    per_layer: dict[str, float]  # group name (and "head_merged") -> host seconds per layer
    per_step: float  # graph launch (graphed) / scheduler overhead, outside the layers


# results by (backend, phase[, seqs, experts hit, microbatches]): the step model asks on every call
_CACHE: dict[tuple, HostDispatch] = {}


def host_dispatch(
    backend: str | None, phase: str, seqs: float, experts_hit: float, microbatches: int = 1
) -> HostDispatch:
    """Host time of a `phase` step of `seqs` sequences per die whose MoE layers hit `experts_hit` experts per
    die, on the stack `backend` names (None: the twin's default profile). Each microbatch issues its own ops."""
    hit = _CACHE.get((backend, phase))  # a graphed phase does not depend on the batch
    if hit is not None:
        return hit
    key = (backend, phase, seqs, experts_hit, microbatches)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    p = load_backend(backend)
    mode = getattr(p.phases, phase)
    if mode == "graph":
        out = HostDispatch(mode, p.overlap, {}, p.host.graph_launch + p.host.step_overhead)
        key = (backend, phase)
    else:
        ops = p.ops[phase]
        # each microbatch issues every layer's ops for its share of the sequences
        per_layer = {
            g: microbatches * ops.per_layer(g, seqs / microbatches, experts_hit) * p.host.per_op for g in LAYER_GROUPS
        }
        # a head run once on the merged microbatches (LayerGroup.merged) issues its ops once, for every sequence
        per_layer["head_merged"] = ops.per_layer("head", seqs, experts_hit) * p.host.per_op
        out = HostDispatch(mode, p.overlap, per_layer, p.host.step_overhead)
    if len(_CACHE) > 4096:
        _CACHE.clear()
    _CACHE[key] = out
    return out
