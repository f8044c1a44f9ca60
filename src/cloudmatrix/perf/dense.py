"""Dense ops of one layer on one die: the dense FFN (tensor-parallel over `tp` dies) and the LM head.

With two decode microbatches the dense FFN runs on the FFN ("moe") stream, beside the other microbatch's
attention, as the MoE block does (paper §4.2.3: the second stream runs the layer's MLP)."""

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
        c.quantise("dense_ffn_quant", "moe", rows * m.hidden, "dense_ffn"),
        c.matmul("dense_ffn", "moe", rows, swiglu_shapes(m.hidden, inter), "dense_ffn"),
        c.vector("dense_swiglu", "moe", rows * inter, 2 * ACT_BYTES + out),
    )
    if tp > 1:
        ops.append(c.collective("all_reduce", rows * m.hidden * ACT_BYTES, tp, "ffn_all_reduce", "moe"))
    return ops


def lm_head_op(c: DieContext, tokens: float, name: str = "lm_head") -> OpCost:
    m = c.model
    return c.matmul(name, "attn", tokens, [(m.hidden, m.vocab)], "head")
