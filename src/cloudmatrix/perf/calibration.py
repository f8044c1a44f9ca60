"""Kernel-level figures the cost model is calibrated from, and the fit that turns them into fabric parameters.

Only kernel-level measurements live here, never end-to-end serving results.
"""

from __future__ import annotations

import math

import numpy as np

# Zuo et al., arXiv 2506.12708, EP dispatch/combine table: batch 128 tokens per rank, top-8,
# latency in microseconds. CloudMatrix384: CANN EP over UB. H800: DeepEP low-latency kernels over
# 400 Gb/s RDMA (the same figures as DeepEP's README).
EP_DEGREES = (8, 32, 128, 256)
EP_LATENCY_US = {
    ("cloudmatrix384", "dispatch"): (116, 133, 152, 152),
    ("cloudmatrix384", "combine"): (118, 146, 150, 149),
    ("h800", "dispatch"): (163, 182, 192, 194),
    ("h800", "combine"): (318, 350, 369, 360),
}
EP_TOKENS_PER_RANK = 128
EP_TOP_K = 8
# Bytes per token copy: CloudMatrix-Infer INT8 dispatch 7,168 + 512 B (paper §4.2.1); DeepEP FP8
# dispatch 7,168 + 56 fp32 block scales = 7,392 B; both combine in BF16 (14,336 B).
EP_BYTES_PER_COPY = {
    ("cloudmatrix384", "dispatch"): 7168 + 512,
    ("cloudmatrix384", "combine"): 7168 * 2,
    ("h800", "dispatch"): 7168 + 4 * 7168 // 128,
    ("h800", "combine"): 7168 * 2,
}


def fit_ep_fabric(
    system: str, link_bytes_per_s: float, latency_s: float
) -> tuple[float, float, float, dict[str, list[float]]]:
    """Least-squares fit of (dispatch_efficiency, combine_efficiency, sync_per_log2_rank) for one fabric,
    to t = latency + T k m (1 - 1/EP) / (B eff_op) + sync log2(EP). Returns the three and the model's
    latencies (s) per op for the published EP degrees."""
    rows, rhs = [], []
    for j, op in enumerate(("dispatch", "combine")):
        m = EP_BYTES_PER_COPY[(system, op)]
        for ep, t_us in zip(EP_DEGREES, EP_LATENCY_US[(system, op)], strict=True):
            volume_time = EP_TOKENS_PER_RANK * EP_TOP_K * m * (1 - 1 / ep) / link_bytes_per_s
            row = [0.0, 0.0, math.log2(ep)]
            row[j] = volume_time  # coefficient of 1/eff_op
            rows.append(row)
            rhs.append(t_us * 1e-6 - latency_s)
    coef, *_ = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)
    inv_d, inv_c, sync = coef
    pred = np.array(rows) @ coef + latency_s
    return 1 / inv_d, 1 / inv_c, sync, {"dispatch": list(pred[:4]), "combine": list(pred[4:])}


# MLA attention and INT8 GEMM (paper §5): the fractions are the hardware files' efficiencies.
MLA_COMPUTE_UTILISATION = {"ascend-910c": 0.654, "h800-sxm": 0.667}
MLA_MEMORY_BANDWIDTH = {"ascend-910c": 1346e9, "h800-sxm": 3000e9}
INT8_GEMM_SHAPES = ((7168, 4096, 4096), (2048, 7168, 4096), (7168, 4096, 8192), (2048, 7168, 8192))  # M x N x K
INT8_GEMM_UTILISATION = (0.774, 0.827)  # range over those shapes on one 910C die

# FP8 GEMM on H800 with DeepGEMM (deepseek-ai/DeepGEMM README, 2025-04): up to ~1,550 of 1,979 TFLOPS on large
# shapes. A measurement on the chip itself with DeepSeek's kernel: it sets the H800's large-shape fp8 fraction,
# while the curve's shape (half_rows, half_k) comes from the H100 fit (benchmarks/calibrate/run.py).
DEEPGEMM_FP8_FRACTION = {"h800-sxm": 1550 / 1979}
