"""Ascend 910C GEMM parameters from the paper's kernel table (Zuo et al., arXiv 2506.12708 v2 §5):

INT8 GEMM (INT8 in, BF16 out) reaches 77.4-82.7% of peak over four M x N x K shapes
(cloudmatrix.perf.calibration.INT8_GEMM_SHAPES). The paper gives the band, not which shape sits where, and
its shapes vary M, N and K together, so two numbers cannot identify a three-term curve. We fit `peak` and
`half_k` so that the twin's lowest and highest efficiency over the four shapes are the band's ends (the model
decides which shape is which), with `half_rows` TRANSFERRED from the per-tensor-scaled 8-bit GEMM fit of an
H100 (the closest NVIDIA analogue of the 910C's per-channel W8A8 kernel; tile quantisation in M is the same
mechanism on any tiled matrix engine). `half_n` is not transferred: with the H100's n-term the band needs a
peak above 100% (run.py prints that check), so that term is specific to the H100's 132-SM wave shape.
No small-M figure is published for the 910C.
"""

from __future__ import annotations

import math

from scipy.optimize import least_squares

from cloudmatrix.perf.calibration import INT8_GEMM_SHAPES, INT8_GEMM_UTILISATION


def shape_factor(curve: dict[str, float], m: float, n: float, k: float) -> float:
    return m / (m + curve["half_rows"]) * n / (n + curve["half_n"]) * k / (k + curve["half_k"])


def band(peak: float, curve: dict[str, float]) -> tuple[float, float]:
    f = [peak * shape_factor(curve, m, n, k) for m, n, k in INT8_GEMM_SHAPES]
    return min(f), max(f)


def fit_gemm(half_rows: float) -> dict[str, float]:
    """peak and half_k for a given (transferred) half_rows; half_n = 0."""
    lo, hi = INT8_GEMM_UTILISATION

    def curve(x):
        return {"half_rows": half_rows, "half_n": 0.0, "half_k": math.exp(x[1])}

    def residual(x):
        a, b = band(1 / (1 + math.exp(-x[0])), curve(x))
        return [a / lo - 1, b / hi - 1]

    x = least_squares(residual, [1.5, math.log(300.0)]).x
    peak = 1 / (1 + math.exp(-x[0]))
    a, b = band(peak, curve(x))
    return {"peak": peak, "min": a, "max": b, **curve(x)}


def full_transfer_peak(curve: dict[str, float]) -> float:
    """The peak the band would need with the whole transferred curve (half_rows, half_n, half_k): the check that
    rules the n-term out when it exceeds 1."""
    lo, hi = INT8_GEMM_UTILISATION
    f = [shape_factor(curve, m, n, k) for m, n, k in INT8_GEMM_SHAPES]
    return (lo / min(f) + hi / max(f)) / 2
