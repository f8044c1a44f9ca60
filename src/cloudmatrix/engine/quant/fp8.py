"""Block-FP8 weights as DeepSeek-V3 ships them, dequantised to float on load.

DeepSeek-V3/R1 checkpoints store most linear weights as float8_e4m3fn with one fp32 scale per
128 x 128 block in a companion tensor `<name>_scale_inv` (e.g. `...q_a_proj.weight_scale_inv`);
config.json says so in `quantization_config` ({"quant_method": "fp8", "fmt": "e4m3",
"weight_block_size": [128, 128], "activation_scheme": "dynamic"}). The float weight is
w[i, j] = fp8[i, j] * scale_inv[i // 128, j // 128] (DeepSeek's own `weight_dequant`); edge
blocks are partial. Leading dims (stacked experts) each carry their own scale grid.
"""

from __future__ import annotations

import torch

from cloudmatrix.errors import CloudMatrixError

FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))
SCALE_SUFFIX = "_scale_inv"


def is_fp8(t: torch.Tensor) -> bool:
    return t.dtype in FP8_DTYPES


def scale_name(weight_name: str) -> str:
    """`...proj.weight` -> `...proj.weight_scale_inv` (the DeepSeek / transformers FP8 naming)."""
    return weight_name + SCALE_SUFFIX


def scale_grid(shape: tuple[int, ...], block: tuple[int, int]) -> tuple[int, ...]:
    """Shape of the scale tensor of a weight of `shape` in (rows, cols) blocks."""
    *lead, n, k = shape
    return (*lead, -(-n // block[0]), -(-k // block[1]))


def dequantize_block_fp8(
    name: str, weight: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int]
) -> torch.Tensor:
    """fp8 weight [..., N, K] times its per-block scales [..., ceil(N/bn), ceil(K/bk)] -> float32."""
    expected = scale_grid(tuple(weight.shape), block)
    if tuple(scale_inv.shape) != expected:
        raise CloudMatrixError(
            f"tensor {scale_name(name)} has shape {list(scale_inv.shape)}, expected {list(expected)} for "
            f"{list(weight.shape)} in {block[0]}x{block[1]} blocks; the checkpoint's weight_block_size is wrong"
        )
    n, k = weight.shape[-2:]
    s = scale_inv.float().repeat_interleave(block[0], dim=-2)[..., :n, :]
    s = s.repeat_interleave(block[1], dim=-1)[..., :k]
    return weight.float() * s


def quantize_block_fp8(w: torch.Tensor, block: tuple[int, int] = (128, 128)) -> tuple[torch.Tensor, torch.Tensor]:
    """float [..., N, K] -> (float8_e4m3fn weight, fp32 scale_inv per block): amax / 448 per block.

    The inverse of dequantize_block_fp8 up to fp8 rounding; tests use it to write FP8 checkpoints.
    """
    fp8 = torch.float8_e4m3fn
    fmax = torch.finfo(fp8).max
    n, k = w.shape[-2:]
    bn, bk = block
    pad = torch.nn.functional.pad(w.float(), (0, -k % bk, 0, -n % bn))
    *lead, pn, pk = pad.shape
    blocks = pad.reshape(*lead, pn // bn, bn, pk // bk, bk)
    amax = blocks.abs().amax(dim=(-3, -1)).clamp_min(1e-12)  # [..., nb, kb]
    scale = amax / fmax
    q = (blocks / scale[..., :, None, :, None]).reshape(*lead, pn, pk)[..., :n, :k].to(fp8)
    return q, scale
