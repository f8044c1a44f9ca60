"""The Pareto frontier of output tokens/s per chip against tokens/s per user (the InferenceX-style chart)."""

from __future__ import annotations

import numpy as np


def pareto(per_chip: np.ndarray, per_user: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both axes, by increasing tokens/s per user."""
    per_chip, per_user = np.asarray(per_chip, float), np.asarray(per_user, float)
    if per_chip.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((-per_chip, -per_user))  # fastest per user first; ties: the higher per chip first
    best = np.maximum.accumulate(per_chip[order])
    keep = np.empty(order.size, dtype=bool)
    keep[0] = True
    keep[1:] = per_chip[order][1:] > best[:-1]
    return order[keep][::-1]
