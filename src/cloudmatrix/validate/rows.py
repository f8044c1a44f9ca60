"""One validation row: what was measured, what the twin predicts, how, and why not when it cannot."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

METRICS = ("ttft", "tpot")
# How a metric is named in tables and plots (the paper suite has one metric: the published figure itself).
METRIC_LABELS = {"ttft": "TTFT", "tpot": "TPOT", "figure": "published figure"}


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


@dataclass
class ValidationRow:
    suite: str  # "silicon" or "paper"
    id: str
    slice: str  # system x backend x mode (silicon) or the figure group (paper)
    tag: str  # "validation" (counts in the headline) or "calibration" (was used to set a parameter)
    conditions: str  # what was measured, in words (layout, lengths, concurrency)
    measured: dict[str, float]  # metric -> value (seconds for ttft/tpot)
    predicted: dict[str, float] = field(default_factory=dict)
    route: str = ""  # "simulation" or "cost model"
    deployment: str = ""  # the exact twin deployment used
    refused: str | None = None  # reason, from a fixed list, when the twin cannot express the row
    detail: str = ""  # the twin's own words for a refusal
    reference: dict[str, float] = field(default_factory=dict)  # another estimator's prediction (side by side)
    reference_note: str = ""  # why the reference has no estimate for this row
    unit: str = "s"
    source: str = ""
    wall_s: float = 0.0

    def error(self, metric: str) -> float | None:
        """Signed relative error of the twin: predicted / measured - 1 (positive = the twin is slower/larger)."""
        return rel_error(self.predicted.get(metric), self.measured.get(metric))

    def reference_error(self, metric: str) -> float | None:
        return rel_error(self.reference.get(metric), self.measured.get(metric))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["error"] = {k: self.error(k) for k in self.measured}
        if self.reference:
            d["reference_error"] = {k: self.reference_error(k) for k in self.measured}
        return d


def rel_error(predicted: float | None, measured: float | None) -> float | None:
    if predicted is None or measured is None or not math.isfinite(predicted) or not measured > 0:
        return None
    return predicted / measured - 1
