"""INT8 W8A8 the CloudMatrix-Infer way: static per-output-channel weight scales, dynamic per-token
activation scales, both symmetric; int8 x int8 -> int32 matmuls where they pay.

Two matmul paths compute the same integer sums:
- "int_mm": `torch._int_mm`. On CUDA it needs K and N multiples of 8 and M > 16 (we pad M). On CPU
  it accepts any shape, but it is only fast with int8 dot-product instructions (AVX512-VNNI,
  AVX-VNNI, AMX); on a plain AVX2 CPU it measured 25-30x *slower* than an fp32 matmul.
- "float_fallback": the int8 values multiplied in fp32 (a float copy of the int8 weight is cached on
  first use): exact while |sum| < 2**24, otherwise within fp32 rounding. W8A8 numerics, float speed.

The mode ("auto" | "int_mm" | "float", env CLOUDMATRIX_INT8_MATMUL, or set_int8_matmul_mode) picks:
auto = int_mm on CUDA when the shape allows and on CPUs with int8 dot-product instructions, float
otherwise. Every call records the path that ran, so a test or benchmark can say what it measured.

Norms, the MoE router (`gate`) and the LM head stay float, as in the paper.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from cloudmatrix.errors import CloudMatrixError

QMAX = 127  # symmetric: -127..127, so -x quantises to -q exactly
PATH_INT_MM = "int_mm"
PATH_FALLBACK = "float_fallback"
MATMUL_MODES = ("auto", "int_mm", "float")
_CUDA_MIN_M = 17  # torch's CUDA _int_mm wants M > 16
_CPU_INT8_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}
_mode = os.environ.get("CLOUDMATRIX_INT8_MATMUL", "auto")


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric INT8 over the last dim: q int8 [..., K], scale fp32 [..., 1]; x ~= q * scale.

    Each element's error is at most scale / 2 = amax / 254. All-zero rows get q = 0.
    """
    xf = x.float()
    amax = xf.abs().amax(dim=-1, keepdim=True)
    # A tiny floor keeps all-zero rows finite (they quantise to 0 and dequantise to 0).
    scale = (amax / QMAX).clamp_min(torch.finfo(torch.float32).tiny)
    q = torch.round(xf / scale).clamp_(-QMAX, QMAX).to(torch.int8)
    return q, scale


def quantize_per_channel(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric INT8 per output channel of a [..., N, K] weight: q int8 [..., N, K], scale fp32 [..., N]."""
    q, scale = quantize_per_token(w)
    return q, scale.squeeze(-1)


def dequantize(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """q * scale; scale broadcasts over the last dim ([..., 1] per token, [N, 1] per channel)."""
    return (q.float() * scale).to(dtype)


def set_int8_matmul_mode(mode: str) -> None:
    """'auto' (default), 'int_mm' (use torch._int_mm wherever the shape allows) or 'float'."""
    global _mode
    if mode not in MATMUL_MODES:
        raise CloudMatrixError(f"unknown INT8 matmul mode {mode!r}; use one of {', '.join(MATMUL_MODES)}")
    _mode = mode


def get_int8_matmul_mode() -> str:
    if _mode not in MATMUL_MODES:
        raise CloudMatrixError(
            f"CLOUDMATRIX_INT8_MATMUL={_mode!r} is not a mode; set it to one of {', '.join(MATMUL_MODES)}"
        )
    return _mode


@functools.cache
def cpu_has_int8_dot() -> bool:
    """Whether this CPU advertises int8 dot-product instructions (Linux /proc/cpuinfo flags)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False  # unknown: prefer the path that is never pathologically slow
    return bool(_CPU_INT8_FLAGS & set(flags))


def int_mm_fits(device: torch.device, k: int, n: int) -> bool:
    """Whether torch._int_mm can run a [M, K] x [K, N] product on this device (M is padded on CUDA)."""
    if not hasattr(torch, "_int_mm"):
        return False
    if device.type == "cpu":
        return True
    return device.type == "cuda" and k % 8 == 0 and n % 8 == 0


def select_path(device: torch.device, k: int, n: int) -> str:
    """The matmul path the current mode takes for a K x N weight on `device`."""
    mode = get_int8_matmul_mode()
    if mode == "float" or not int_mm_fits(device, k, n):
        return PATH_FALLBACK
    if mode == "int_mm" or device.type == "cuda":
        return PATH_INT_MM
    return PATH_INT_MM if cpu_has_int8_dot() else PATH_FALLBACK


def int8_matmul(xq: torch.Tensor, wq: torch.Tensor, wq_float: torch.Tensor | None = None) -> tuple[torch.Tensor, str]:
    """xq [M, K] int8 @ wq [N, K]^T int8 -> (fp32 [M, N] holding the int32 sums, path that ran).

    wq_float: wq already converted to fp32, used by the float path (saves converting per call).
    """
    m, k = xq.shape
    n = wq.shape[0]
    path = select_path(xq.device, k, n)
    if m == 0:
        return torch.zeros((0, n), dtype=torch.float32, device=xq.device), path
    if path == PATH_INT_MM:
        if xq.device.type == "cpu":
            return torch._int_mm(xq, wq.t()).float(), path
        # Pad M past CUDA's lower bound (and to a multiple of 8); padded rows are zeros, dropped after.
        mp = (max(_CUDA_MIN_M, m) + 7) // 8 * 8
        a = xq if mp == m else F.pad(xq, (0, 0, 0, mp - m))
        return torch._int_mm(a, wq.t())[:m].float(), path
    wf = wq_float if wq_float is not None else wq.float()
    return F.linear(xq.float(), wf), path


def int8_linear(
    xq: torch.Tensor,
    xs: torch.Tensor,
    wq: torch.Tensor,
    ws: torch.Tensor,
    wq_float: torch.Tensor | None = None,
) -> tuple[torch.Tensor, str]:
    """Activations int8 [M, K] (scale [M, 1]) times a weight int8 [N, K] (scale [N]) -> fp32 [M, N]."""
    acc, path = int8_matmul(xq, wq, wq_float)
    return acc * xs * ws, path


def _float_copy_if_needed(wq: torch.Tensor, cache: torch.Tensor | None) -> torch.Tensor | None:
    """The fp32 copy of an int8 weight the float path wants: built once, only when that path is taken."""
    if cache is not None:
        return cache
    if select_path(wq.device, wq.shape[-1], wq.shape[-2]) == PATH_FALLBACK:
        return wq.float()
    return None


class Int8Linear(torch.nn.Module):
    """W8A8 drop-in for nn.Linear: weight int8 per output channel (static), input int8 per token (dynamic).

    `path_counts` counts which matmul path ran ("int_mm" or "float_fallback"); `last_path` is the latest.
    """

    def __init__(self, weight_q: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.in_features = weight_q.shape[1]
        self.out_features = weight_q.shape[0]
        self.register_buffer("weight_q", weight_q)
        self.register_buffer("weight_scale", weight_scale)
        self.register_buffer("bias", bias)
        self.path_counts: Counter[str] = Counter()
        self.last_path: str | None = None
        self._wq_float: torch.Tensor | None = None  # fp32 copy for the float path, built on first use

    @classmethod
    def from_float(cls, linear: torch.nn.Linear) -> Int8Linear:
        q, s = quantize_per_channel(linear.weight.detach())
        bias = None if linear.bias is None else linear.bias.detach().clone()
        return cls(q, s, bias)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize(self.weight_q, self.weight_scale[:, None], dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise CloudMatrixError(
                f"Int8Linear expects inputs with {self.in_features} features, got shape {tuple(x.shape)}; "
                "pass activations whose last dim matches the layer's in_features"
            )
        lead = x.shape[:-1]
        xq, xs = quantize_per_token(x.reshape(-1, self.in_features))
        if self._wq_float is not None and self._wq_float.device != self.weight_q.device:
            self._wq_float = None  # the module moved devices
        self._wq_float = _float_copy_if_needed(self.weight_q, self._wq_float)
        y, path = int8_linear(xq, xs, self.weight_q, self.weight_scale, self._wq_float)
        self.path_counts[path] += 1
        self.last_path = path
        if self.bias is not None:
            y = y + self.bias.float()
        return y.to(x.dtype).reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        bias = self.bias is not None
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={bias}"


@dataclass
class Int8ExpertWeights:
    """Routed experts quantised W8A8; gate and up are fused into one [E, 2I, H] matmul.

    gate_up_q int8 [E, 2I, H], gate_up_s fp32 [E, 2I]; down_q int8 [E, H, I], down_s fp32 [E, H].
    """

    gate_up_q: torch.Tensor
    gate_up_s: torch.Tensor
    down_q: torch.Tensor
    down_s: torch.Tensor
    # fp32 copies of the int8 stacks for the float path, built on first use.
    _float: dict[str, torch.Tensor | None] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def num_experts(self) -> int:
        return self.gate_up_q.shape[0]

    @property
    def intermediate_size(self) -> int:
        return self.down_q.shape[2]

    def select(self, expert_ids: list[int]) -> Int8ExpertWeights:
        idx = torch.as_tensor(expert_ids, dtype=torch.long)
        return Int8ExpertWeights(self.gate_up_q[idx], self.gate_up_s[idx], self.down_q[idx], self.down_s[idx])

    def _float_stacks(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        for name, q in (("gate_up", self.gate_up_q), ("down", self.down_q)):
            self._float[name] = _float_copy_if_needed(q, self._float.get(name))
        return self._float["gate_up"], self._float["down"]

    def forward_expert(
        self,
        x: torch.Tensor | None,
        e: int,
        counts: Counter[str] | None = None,
        pre_quantized: tuple[torch.Tensor, torch.Tensor] | None = None,
        out_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """One SwiGLU expert in W8A8. `pre_quantized` (q, scale) skips re-quantising the input, e.g. tokens
        that arrived INT8 from an EP dispatch."""
        xq, xs = pre_quantized if pre_quantized is not None else quantize_per_token(x)
        gu_f, down_f = self._float_stacks()
        gu, p1 = int8_linear(xq, xs, self.gate_up_q[e], self.gate_up_s[e], None if gu_f is None else gu_f[e])
        g, u = gu.split(self.intermediate_size, dim=-1)
        hq, hs = quantize_per_token(F.silu(g) * u)
        y, p2 = int8_linear(hq, hs, self.down_q[e], self.down_s[e], None if down_f is None else down_f[e])
        if counts is not None:
            counts[p1] += 1
            counts[p2] += 1
        dtype = out_dtype if out_dtype is not None else (x.dtype if x is not None else torch.float32)
        return y.to(dtype)


def quantize_expert_weights(weights) -> Int8ExpertWeights:
    """Quantise stacked float ExpertWeights (gate/up [E, I, H], down [E, H, I]) per output channel."""
    gate_up = torch.cat([weights.gate.detach(), weights.up.detach()], dim=1)
    gq, gs = quantize_per_channel(gate_up)
    dq, ds = quantize_per_channel(weights.down.detach())
    return Int8ExpertWeights(gq, gs, dq, ds)


INT8_EXPERT_BUFFERS = ("gate_up_q", "gate_up_s", "down_q", "down_s")


def register_int8_expert_buffers(module: torch.nn.Module, weights: Int8ExpertWeights) -> None:
    """Hold W8A8 expert stacks as buffers of `module`, so .to(), state_dict() and load_state_dict() reach them."""
    for name in INT8_EXPERT_BUFFERS:
        module.register_buffer(name, getattr(weights, name))
    module._int8_view = None


def int8_weights_of(module: torch.nn.Module) -> Int8ExpertWeights:
    """The Int8ExpertWeights over `module`'s buffers; rebuilt (dropping float copies) when a buffer changed."""
    bufs = tuple(getattr(module, n) for n in INT8_EXPERT_BUFFERS)
    key = tuple((b.data_ptr(), b.dtype, b.device) for b in bufs)
    view = module._int8_view
    if view is None or view[0] != key:
        view = (key, Int8ExpertWeights(*bufs))
        module._int8_view = view
    return view[1]


class Int8Experts(torch.nn.Module):
    """The single-process experts backend in W8A8 (the INT8 counterpart of LocalExperts)."""

    def __init__(self, weights: Int8ExpertWeights):
        super().__init__()
        register_int8_expert_buffers(self, weights)
        self.path_counts: Counter[str] = Counter()

    @property
    def weights(self) -> Int8ExpertWeights:
        return int8_weights_of(self)

    @classmethod
    def from_float(cls, weights) -> Int8Experts:
        return cls(quantize_expert_weights(weights))

    def forward(self, hidden: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(hidden)
        k = topk_ids.shape[1]
        flat_ids = topk_ids.reshape(-1)
        order = torch.argsort(flat_ids, stable=True)
        counts = torch.bincount(flat_ids, minlength=self.weights.num_experts).tolist()
        token_of = order // k
        weight_of = topk_weights.reshape(-1)[order]
        # Quantise each token once; every expert it visits reuses the same int8 row.
        xq, xs = quantize_per_token(hidden)
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            tok = token_of[start : start + n]
            y = self.weights.forward_expert(
                None, e, self.path_counts, pre_quantized=(xq[tok], xs[tok]), out_dtype=torch.float32
            )
            out.index_add_(0, tok, (y * weight_of[start : start + n, None].float()).to(out.dtype))
            start += n
        return out


# Last name components kept float: the router and the LM head (as in the paper; norms are not Linear),
# and MLA's kv_b_proj, whose weight the absorbed decode attention reads directly as per-head matrices.
DEFAULT_SKIP = ("gate", "lm_head", "kv_b_proj")


@dataclass
class QuantReport:
    """What quantize_model changed: module names quantised, kept float, and expert backends replaced."""

    quantized: list[str]
    kept_float: list[str]
    experts: list[str]


def quantize_model(model: torch.nn.Module, skip: tuple[str, ...] = DEFAULT_SKIP) -> QuantReport:
    """Replace the large linear layers with Int8Linear and the expert backends with INT8 ones, in place.

    Every nn.Linear is quantised unless its last name component is in `skip` (default: the MoE router
    `gate`, `lm_head` and MLA's `kv_b_proj`). Expert backends are swapped: LocalExperts -> Int8Experts;
    a backend with a `quantize_int8()` method (e.g. ExpertParallelExperts) quantises its own weights.
    """
    from cloudmatrix.engine.model.experts import LocalExperts

    report = QuantReport([], [], [])
    for name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, torch.nn.Linear):
                if child_name in skip:
                    report.kept_float.append(full)
                    continue
                setattr(parent, child_name, Int8Linear.from_float(child))
                report.quantized.append(full)
            elif isinstance(child, LocalExperts):
                setattr(parent, child_name, Int8Experts.from_float(child.weights))
                report.experts.append(full)
            elif hasattr(child, "quantize_int8"):
                child.quantize_int8()
                report.experts.append(full)
    if not report.quantized and not report.experts:
        raise CloudMatrixError(
            "quantize_model found no nn.Linear layers or expert backends to quantise; "
            "pass the float model (not an already-quantised one)"
        )
    return report


def int8_path_counts(model: torch.nn.Module) -> Counter[str]:
    """Sum of the matmul paths every Int8Linear / INT8 experts backend in the model has run."""
    total: Counter[str] = Counter()
    for m in model.modules():
        counts = getattr(m, "path_counts", None)
        if isinstance(counts, Counter):
            total.update(counts)
    return total
