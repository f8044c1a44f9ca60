"""Open-loop arrival processes: Poisson and gamma renewal (bursty or regular)."""

from __future__ import annotations

import math

import numpy as np

from cloudmatrix.errors import CloudMatrixError


def poisson_arrivals(rate: float, rng: np.random.Generator, *, n: int | None = None,
                     duration: float | None = None) -> np.ndarray:  # fmt: skip
    """Arrival times [s] of a Poisson process at `rate` requests/s (n requests, or all before duration)."""
    return gamma_arrivals(rate, 1.0, rng, n=n, duration=duration)


def gamma_arrivals(rate: float, cv: float, rng: np.random.Generator, *, n: int | None = None,
                   duration: float | None = None) -> np.ndarray:  # fmt: skip
    """Renewal process with gamma inter-arrivals: mean 1/rate, coefficient of variation `cv`.

    cv = 1 is Poisson; cv > 1 is burstier, cv < 1 more regular.
    """
    if not (rate > 0 and math.isfinite(rate)):
        raise CloudMatrixError(f"arrival rate must be a finite number > 0 requests/s, got {rate}.")
    if not (cv > 0 and math.isfinite(cv)):
        raise CloudMatrixError(f"arrival cv must be a finite number > 0, got {cv}.")
    if (n is None) == (duration is None):
        raise CloudMatrixError("give exactly one of num_requests and duration.")
    shape = 1.0 / cv**2
    scale = 1.0 / (rate * shape)

    def gaps(k: int) -> np.ndarray:
        return rng.exponential(1.0 / rate, k) if cv == 1.0 else rng.gamma(shape, scale, k)

    if n is not None:
        return np.cumsum(gaps(int(n)))
    expected = rate * duration
    chunk = int(expected + 6 * math.sqrt(expected) * max(cv, 1.0) + 16)
    times = np.cumsum(gaps(chunk))
    while times[-1] < duration:  # rarely taken: the first chunk covers the window
        times = np.concatenate([times, times[-1] + np.cumsum(gaps(chunk))])
    return times[times < duration]
