"""Microbatch overlap: the critical path of a layer when two microbatches share a die.

With one microbatch a layer's ops run one after another on the whole die. With two,
CloudMatrix-Infer runs two streams that alternate between microbatches: while one
microbatch is in stream A the other is in stream B. In steady state every layer costs

    2 * max(A, B)

per step (each stream must process both microbatches), plus the fill/drain of the
pipeline, min(A, B), once per step. A and B are one microbatch's stream times with
each stream's share of the cores (decode: attention stream 16 of 24 cube cores, MoE
stream 8 of 24, paper §4.2.3; prefill: all compute in A at full share, communication
in B on the vector cores and DMA engines, paper §4.3).
"""

from __future__ import annotations

from collections.abc import Sequence

from cloudmatrix.perf.op import OpCost


def stream_times(ops: Sequence[OpCost], mode: str, attn_share: float) -> tuple[float, float]:
    """(A, B) for one microbatch through one layer."""
    a = b = 0.0
    for op in ops:
        if mode == "core-split":
            if op.stream == "attn":
                a += op.time_with_share(attn_share)
            else:
                b += op.time_with_share(1 - attn_share)
        elif mode == "comm-compute":
            if op.kind == "comm":
                b += op.comm_time
            else:
                a += op.time
        else:
            raise ValueError(f"unknown overlap mode {mode!r}")
    return a, b


def layer_time(ops: Sequence[OpCost], microbatches: int, mode: str, attn_share: float) -> tuple[float, float]:
    """(steady-state time per layer, fill time) for `ops` built for one microbatch."""
    if microbatches == 1:
        return sum(op.time for op in ops), 0.0
    a, b = stream_times(ops, mode, attn_share)
    return microbatches * max(a, b), min(a, b)
