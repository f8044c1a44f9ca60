"""The die context: everything an op builder needs (model, system, deployment), resolved once per step,
and thin calls into the kernel model (`perf/kernels.py`) at the precision of each op class."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from cloudmatrix.perf import kernels
from cloudmatrix.perf.deployment import Deployment
from cloudmatrix.perf.op import OpCost
from cloudmatrix.specs.backend import kernel_curves
from cloudmatrix.specs.hardware import BYTES_PER_ELEMENT, System
from cloudmatrix.specs.model import ModelSpec

ACT_BYTES = kernels.ACT_BYTES  # activations between ops stay BF16


@dataclass(frozen=True)
class DieContext:
    model: ModelSpec
    system: System
    dep: Deployment
    # two-stream decode: each stream's share of the cores ({"attn": 2/3, "moe": 1/3}); None: the whole die
    stream_share: dict[str, float] | None = None

    def __post_init__(self):
        curves = kernel_curves(self.dep.backend)  # the serving stack's kernel curves (specs/backend.py)
        if curves is not None:  # resolved once per system and backend
            object.__setattr__(self, "system", self.system.for_backend(curves))

    @property
    def chip(self):
        return self.system.chip

    def dtype(self, op_class: str) -> str:
        """Precision of an op class: "attn_proj", "experts", "dense_ffn" or "head"."""
        return getattr(self.dep.precision, op_class)

    def matmul(
        self,
        name: str,
        stream: str,
        rows: float,
        shapes: Sequence[tuple[float, float]],
        op_class: str = "experts",
        weight_copies: float = 1.0,
    ) -> OpCost:
        """rows x (K x N) GEMMs at the op class's precision, reported as one op (every builder here names
        its class; the default serves kernel-level checks of the expert GEMM)."""
        dtype = self.dtype(op_class)
        share = self.stream_share[stream] if self.stream_share else 1.0
        if share >= 1.0 or rows <= 0:
            return kernels.gemms(rows, shapes, dtype, self.chip, name=name, stream=stream, weight_copies=weight_copies)
        sub = kernels.gemms(
            rows / share, shapes, dtype, self.chip, name=name, stream=stream, weight_copies=weight_copies
        )
        return self._on_share(sub, share, sum(k * n for k, n in shapes) * weight_copies, dtype)

    def grouped(
        self, name: str, rows: float, experts: float, shapes: Sequence[tuple[float, float]], tokens_in: float = 0.0
    ) -> OpCost:
        """MoE experts as a grouped GEMM: `rows` token copies over `experts` experts whose weights are read;
        `tokens_in` the distinct tokens the die's MoE op takes in (kernels.grouped_gemm's token pass)."""
        dtype = self.dtype("experts")
        share = self.stream_share["moe"] if self.stream_share else 1.0
        elements = tokens_in * self.model.hidden
        if share >= 1.0 or rows <= 0:
            return kernels.grouped_gemm(
                rows, experts, shapes, dtype, self.chip, name=name, stream="moe", token_elements=elements
            )
        sub = kernels.grouped_gemm(
            rows / share, experts, shapes, dtype, self.chip, name=name, stream="moe", token_elements=elements / share
        )
        return self._on_share(sub, share, sum(k * n for k, n in shapes) * experts, dtype)

    def _on_share(self, sub: OpCost, share: float, params: float, dtype: str) -> OpCost:
        """A GEMM as its stream runs it on `share` of the cores, from `sub`, the same GEMM with rows / share
        on the whole die. The efficiency curves are fitted on the whole die, where m rows spread over all
        cores; on a share of the cores each core holds the work of m / share rows, so the small-M fall-off
        (tile and wave quantisation) is that of m / share rows. The compute time is stated for the whole
        die (the overlap model divides it by the share again): share x (time of the m / share GEMM).
        FLOPs and activation bytes scale back by the share; the `params` weights are read once either way."""
        w = params * BYTES_PER_ELEMENT[dtype]
        nbytes = w + (sub.bytes - w) * share
        flops = sub.flops * share
        vals = [getattr(sub, f) for f in _OP_FIELDS]  # dataclasses.replace, without its per-call overhead
        vals[_I["flops"]] = flops
        vals[_I["bytes"]] = nbytes
        vals[_I["compute_time"]] = sub.compute_time * share
        vals[_I["memory_time"]] = sub.memory_time * nbytes / sub.bytes if sub.bytes > 0 else 0.0
        vals[_I["limit_time"]] = max(flops / self.chip.peak(dtype), nbytes / self.chip.die.hbm_bandwidth)
        return OpCost(*vals)

    def vector(
        self, name: str, stream: str, elements: float, bytes_per_element: float, fraction: float | None = None
    ) -> OpCost:
        """An element-wise vector kernel moving `bytes_per_element` bytes of HBM traffic per element (at `fraction`
        of HBM when given, else the chip's `vector`)."""
        return kernels.vector_op(elements, bytes_per_element, self.chip, name=name, stream=stream, fraction=fraction)

    def quantise(self, name: str, stream: str, elements: float, op_class: str) -> OpCost | None:
        """Per-token dynamic quantisation of a matmul's BF16 input (read BF16, write the narrow type),
        or None when the op class runs unquantised."""
        out = BYTES_PER_ELEMENT[self.dtype(op_class)]
        if out >= ACT_BYTES:
            return None
        return self.vector(name, stream, elements, ACT_BYTES + out)

    def collective(self, kind: str, nbytes: float, ranks: int, name: str, stream: str) -> OpCost:
        return kernels.collective(kind, nbytes, ranks, self.system, name=name, stream=stream)


_OP_FIELDS = tuple(f.name for f in fields(OpCost))
_I = {f: i for i, f in enumerate(_OP_FIELDS)}


def swiglu_shapes(hidden: float, inter: float) -> list[tuple[float, float]]:
    """gate and up fused (H -> 2I), then down (I -> H)."""
    return [(hidden, 2 * inter), (inter, hidden)]


def present(*ops: OpCost | None) -> list[OpCost]:
    """The ops that exist (a quantisation step is None for an unquantised op class)."""
    return [op for op in ops if op is not None]
