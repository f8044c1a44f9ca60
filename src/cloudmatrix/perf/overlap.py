"""Microbatch overlap: the critical path of a layer when two microbatches share a die.

With one microbatch a layer's ops run one after another on the whole die. With two,
CloudMatrix-Infer runs two streams that alternate between microbatches: while one
microbatch is in stream A the other is in stream B. In steady state every layer costs

    2 * T_pair

per step (each stream must process both microbatches), plus the fill/drain of the
pipeline, min(A, B), once per step.

- "core-split" (decode): each stream owns its share of the cores (attention stream 16 of 24
  cube and 32 of 48 vector cores, MoE stream 8 and 16, paper §4.2.3), so T_pair = max(A, B)
  with A and B timed at those shares.
- "comm-compute" (prefill): all compute in A, dispatch/combine and the SP/TP collectives in B.
  The communication kernels are not free of the compute cores (`CommCores`):
  * on the 910C they run on the vector cores (FusedDispatch/FusedCombine write remote memory
    from the AIV cores, paper §4.2.1), which A's vector kernels and its attention core (a mixed
    cube + vector kernel: softmax on the AIV) also need, so those serialise with B:
    T_pair = max(A, A_vector + B);
  * on NVIDIA GPUs DeepEP's normal kernels occupy `sm_share` of the SMs while they run (24 SMs,
    `Buffer.set_num_sms(24)` in DeepEP's README), slowing A's compute meanwhile:
    T_pair = B if A' <= B else B + A (1 - B / A'), A' = A with (1 - sm_share) of the cores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cloudmatrix.perf.op import OpCost

# DeepEP normal (prefill) kernels: 24 SMs (DeepEP README, `Buffer.set_num_sms(24)`).
DEEPEP_NORMAL_SMS = 24


@dataclass(frozen=True)
class CommCores:
    """What the communication stream takes from the compute stream while it runs."""

    vector_cores: bool = False  # comm kernels run on the vector cores (Ascend AIV)
    sm_share: float = 0.0  # fraction of the SMs the comm kernels occupy (GPU)


def comm_cores_for(chip) -> CommCores:
    """The prefill communication kernels' core use on this chip's software stack."""
    if chip.vendor.lower() == "huawei":
        return CommCores(vector_cores=True)
    sms = chip.die.matrix_cores
    return CommCores(sm_share=DEEPEP_NORMAL_SMS / sms) if sms else CommCores()


def _needs_vector_cores(op: OpCost) -> bool:
    """Element-wise kernels (no matmul FLOPs) and the attention core (softmax on the vector units)."""
    return op.kind != "comm" and (op.flops == 0 or op.name == "attention_core")


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


def _pair_time(ops: Sequence[OpCost], a: float, b: float, cores: CommCores) -> float:
    """One microbatch in each stream at once, comm-compute mode."""
    t = max(a, b)
    if cores.vector_cores:
        t = max(t, sum(op.time for op in ops if _needs_vector_cores(op)) + b)
    if cores.sm_share > 0 and b > 0:
        a_shared = sum(op.time_with_share(1 - cores.sm_share) for op in ops if op.kind != "comm")
        t = max(t, b if a_shared <= b else b + a * (1 - b / a_shared))
    return t


def layer_time(
    ops: Sequence[OpCost], microbatches: int, mode: str, attn_share: float, cores: CommCores | None = None
) -> tuple[float, float]:
    """(steady-state time per layer, fill time) for `ops` built for one microbatch."""
    if microbatches == 1:
        return sum(op.time for op in ops), 0.0
    a, b = stream_times(ops, mode, attn_share)
    pair = _pair_time(ops, a, b, cores) if (mode == "comm-compute" and cores) else max(a, b)
    # The two streams share one HBM: while each runs one microbatch, all of that microbatch's bytes
    # cross the same memory bus, so a pair lasts at least their sum at the die's bandwidth.
    pair = max(pair, sum(op.memory_time for op in ops if op.kind != "comm"))
    return microbatches * pair, min(a, b)
