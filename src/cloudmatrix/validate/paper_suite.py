"""The paper suite: the CloudMatrix-Infer end-to-end figures (validate/paper.py) as validation rows.

Each published figure gives two rows, one per route: the cost model at the paper's operating point
and the simulator running the shipped scenario. Every figure carries a tag: `validation` figures are
never used to set a parameter and are the only ones in the headline error; `calibration` figures
(kernel and layer tables, when a suite row uses one) are listed but not scored. The derived
tokens/s-per-TFLOPS rows are the same figures divided by a constant and are left out.
"""

from __future__ import annotations

from cloudmatrix.validate.paper import Row, reproduce
from cloudmatrix.validate.rows import ValidationRow

SOURCE = "Zuo et al., Serving Large Language Models on Huawei CloudMatrix384, arXiv 2506.12708, §5"

# figure (as paper.py names it) -> (id, group, shipped scenario, tag). End-to-end figures only validate.
FIGURES = {
    "prefill tokens/s per NPU, default expert balance": ("prefill-default", "prefill", "paper-prefill", "validation"),
    "prefill tokens/s per NPU, perfect expert balance": (
        "prefill-perfect", "prefill", "paper-prefill-perfect", "validation"),
    "decode tokens/s per NPU, 96 sequences per NPU": ("decode-96", "decode", "paper-decode", "validation"),
    "decode TPOT at 96 sequences per NPU": ("decode-96-tpot", "decode", "paper-decode", "validation"),
    "decode tokens/s per NPU under a 15 ms TPOT cap": ("decode-15ms", "decode", "paper-decode-15ms", "validation"),
}  # fmt: skip
METRIC = "figure"


def paper_rows(simulate: bool = True, duration_scale: float = 1.0) -> list[ValidationRow]:
    out = []
    for r in reproduce(simulate_scenarios=simulate, duration_scale=duration_scale):
        if r.figure not in FIGURES:
            continue
        out.append(_row(r, "cost model", r.cost_model))
        if r.simulated is not None:
            out.append(_row(r, "simulation", r.simulated))
    return out


def _row(r: Row, route: str, value: float) -> ValidationRow:
    fid, group, scenario, tag = FIGURES[r.figure]
    return ValidationRow(
        suite="paper",
        id=f"{fid}:{route.replace(' ', '-')}",
        slice=f"cloudmatrix384 {group} ({route})",
        tag=tag,
        conditions=f"{r.figure} ({r.unit})",
        measured={METRIC: r.published},
        predicted={METRIC: value},
        route=route,
        deployment=f"scenario {scenario}, " + ("simulated" if route == "simulation" else "one step at its batch"),
        detail=r.explanation,
        unit=r.unit,
        source=SOURCE,
    )
