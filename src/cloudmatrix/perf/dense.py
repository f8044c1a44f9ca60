"""Dense ops of one layer on one die: the dense FFN (tensor-parallel over `tp` dies) and the LM head."""

from __future__ import annotations

from cloudmatrix.perf.context import ACT_BYTES, DieContext, present, swiglu_shapes
from cloudmatrix.perf.op import OpCost
from cloudmatrix.specs.hardware import BYTES_PER_ELEMENT


def dense_ffn_ops(c: DieContext, tokens: float, tp: int = 1) -> list[OpCost]:
    """SwiGLU FFN with its intermediate split over `tp` dies (the group's tokens x tp rows on each), then an
    all-reduce of the partial outputs."""
    m = c.model
    rows, inter = tokens * tp, m.intermediate / tp
    out = min(ACT_BYTES, BYTES_PER_ELEMENT[c.dtype("dense_ffn")])
    ops = present(
        c.quantise("dense_ffn_quant", "attn", rows * m.hidden, "dense_ffn"),
        c.matmul("dense_ffn", "attn", rows, swiglu_shapes(m.hidden, inter), "dense_ffn"),
        c.vector("dense_swiglu", "attn", rows * inter, 2 * ACT_BYTES + out),
    )
    if tp > 1:
        ops.append(c.collective("all_reduce", rows * m.hidden * ACT_BYTES, tp, "ffn_all_reduce", "attn"))
    return ops


def lm_head_op(c: DieContext, tokens: float, name: str = "lm_head") -> OpCost:
    m = c.model
    return c.matmul(name, "attn", tokens, [(m.hidden, m.vocab)], "head")
