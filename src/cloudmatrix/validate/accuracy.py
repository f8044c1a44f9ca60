"""Accuracy of a set of validation rows, per slice and overall: coverage, refusals by reason, and for each
metric MAPE, signed median error and the share of rows within 10% and 20%.

Errors are predicted / measured - 1. MAPE is the mean of |error|; the signed median shows the bias
(negative: the twin predicts less time than measured, i.e. too fast). Only rows tagged
`validation` count; `calibration` rows are listed but never enter these figures.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from cloudmatrix.validate.rows import ValidationRow


@dataclass
class MetricStats:
    n: int
    mape: float | None
    signed_median: float | None
    within_10: float | None
    within_20: float | None

    @classmethod
    def of(cls, errors: Iterable[float]) -> MetricStats:
        e = list(errors)
        if not e:
            return cls(0, None, None, None, None)
        a = [abs(x) for x in e]
        return cls(
            n=len(e),
            mape=sum(a) / len(a),
            signed_median=statistics.median(e),
            within_10=sum(x <= 0.10 for x in a) / len(a),
            within_20=sum(x <= 0.20 for x in a) / len(a),
        )


@dataclass
class SliceStats:
    name: str
    rows: int  # validation rows in the slice
    predicted: int
    refused: Counter = field(default_factory=Counter)  # reason -> rows
    metrics: dict[str, MetricStats] = field(default_factory=dict)
    # the side-by-side estimator: on every row it estimates, then on the rows both estimate, beside the twin there
    reference_predicted: int = 0
    reference_all: dict[str, MetricStats] = field(default_factory=dict)
    reference: dict[str, MetricStats] = field(default_factory=dict)
    twin_on_shared: dict[str, MetricStats] = field(default_factory=dict)

    @property
    def coverage(self) -> float:
        return self.predicted / self.rows if self.rows else 0.0


def slice_stats(name: str, rows: list[ValidationRow], metrics: Iterable[str]) -> SliceStats:
    val = [r for r in rows if r.tag == "validation"]
    s = SliceStats(name, len(val), sum(r.refused is None for r in val))
    s.refused = Counter(r.refused for r in val if r.refused is not None)
    for k in metrics:
        s.metrics[k] = MetricStats.of(e for r in val if r.refused is None and (e := r.error(k)) is not None)
        shared = [r for r in val if r.refused is None and r.error(k) is not None and r.reference_error(k) is not None]
        if any(r.reference or r.reference_note for r in val):
            s.reference_predicted = sum(bool(r.reference) for r in val)
            s.reference_all[k] = MetricStats.of(e for r in val if (e := r.reference_error(k)) is not None)
            s.reference[k] = MetricStats.of(r.reference_error(k) for r in shared)  # type: ignore[misc]
            s.twin_on_shared[k] = MetricStats.of(r.error(k) for r in shared)  # type: ignore[misc]
    return s


def summarize(rows: list[ValidationRow], metrics: Iterable[str]) -> tuple[SliceStats, list[SliceStats]]:
    """(overall, per slice sorted by name)."""
    metrics = tuple(metrics)
    by: dict[str, list[ValidationRow]] = {}
    for r in rows:
        by.setdefault(r.slice, []).append(r)
    return slice_stats("all", rows, metrics), [slice_stats(k, v, metrics) for k, v in sorted(by.items())]
