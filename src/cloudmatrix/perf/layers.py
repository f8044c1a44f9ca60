"""Index of the op builders of one layer on one die, by family (kept for callers that import from here):
attention (`perf/attention.py`), MoE (`perf/moe.py`), dense FFN and LM head (`perf/dense.py`), and the
die context they share (`perf/context.py`)."""

from cloudmatrix.perf.attention import gqa_ops, mla_decode_ops, mla_prefill_ops
from cloudmatrix.perf.context import ACT_BYTES, DieContext
from cloudmatrix.perf.dense import dense_ffn_ops, lm_head_op
from cloudmatrix.perf.moe import dispatch_bytes_per_copy, moe_ops

__all__ = [
    "ACT_BYTES",
    "DieContext",
    "dense_ffn_ops",
    "dispatch_bytes_per_copy",
    "gqa_ops",
    "lm_head_op",
    "mla_decode_ops",
    "mla_prefill_ops",
    "moe_ops",
]
