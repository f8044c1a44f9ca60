"""INT8 W8A8 quantisation for the serving engine (per-channel weights, per-token activations)."""

from cloudmatrix.engine.quant.int8 import (
    Int8Experts,
    Int8ExpertWeights,
    Int8Linear,
    QuantReport,
    cpu_has_int8_dot,
    dequantize,
    get_int8_matmul_mode,
    int8_matmul,
    int8_path_counts,
    quantize_expert_weights,
    quantize_model,
    quantize_per_channel,
    quantize_per_token,
    set_int8_matmul_mode,
)

__all__ = [
    "Int8ExpertWeights",
    "Int8Experts",
    "Int8Linear",
    "QuantReport",
    "cpu_has_int8_dot",
    "dequantize",
    "get_int8_matmul_mode",
    "int8_matmul",
    "int8_path_counts",
    "quantize_expert_weights",
    "quantize_model",
    "quantize_per_channel",
    "quantize_per_token",
    "set_int8_matmul_mode",
]
