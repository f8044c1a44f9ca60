"""The die context: everything an op builder needs (model, system, deployment), resolved once per step,
and thin calls into the kernel model (`perf/kernels.py`) at the precision of each op class."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cloudmatrix.perf import kernels
from cloudmatrix.perf.deployment import Deployment
from cloudmatrix.perf.op import OpCost
from cloudmatrix.specs.hardware import BYTES_PER_ELEMENT, System
from cloudmatrix.specs.model import ModelSpec

ACT_BYTES = kernels.ACT_BYTES  # activations between ops stay BF16


@dataclass(frozen=True)
class DieContext:
    model: ModelSpec
    system: System
    dep: Deployment

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
        return kernels.gemms(
            rows, shapes, self.dtype(op_class), self.chip, name=name, stream=stream, weight_copies=weight_copies
        )

    def grouped(self, name: str, rows: float, experts: float, shapes: Sequence[tuple[float, float]]) -> OpCost:
        """MoE experts as a grouped GEMM: `rows` token copies over `experts` experts whose weights are read."""
        return kernels.grouped_gemm(rows, experts, shapes, self.dtype("experts"), self.chip, name=name, stream="moe")

    def vector(self, name: str, stream: str, elements: float, bytes_per_element: float) -> OpCost:
        """An element-wise vector kernel moving `bytes_per_element` bytes of HBM traffic per element."""
        return kernels.vector_op(elements, bytes_per_element, self.chip, name=name, stream=stream)

    def quantise(self, name: str, stream: str, elements: float, op_class: str) -> OpCost | None:
        """Per-token dynamic quantisation of a matmul's BF16 input (read BF16, write the narrow type),
        or None when the op class runs unquantised."""
        out = BYTES_PER_ELEMENT[self.dtype(op_class)]
        if out >= ACT_BYTES:
            return None
        return self.vector(name, stream, elements, ACT_BYTES + out)

    def collective(self, kind: str, nbytes: float, ranks: int, name: str, stream: str) -> OpCost:
        return kernels.collective(kind, nbytes, ranks, self.system, name=name, stream=stream)


def swiglu_shapes(hidden: float, inter: float) -> list[tuple[float, float]]:
    """gate and up fused (H -> 2I), then down (I -> H)."""
    return [(hidden, 2 * inter), (inter, hidden)]


def present(*ops: OpCost | None) -> list[OpCost]:
    """The ops that exist (a quantisation step is None for an unquantised op class)."""
    return [op for op in ops if op is not None]
