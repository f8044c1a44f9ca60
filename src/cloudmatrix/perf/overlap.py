"""Microbatch overlap: the critical path of a layer when two microbatches share a die.

With one microbatch a layer's ops run one after another on the whole die. With two, the
microbatches alternate between two streams, so that one microbatch's work in one stream runs
while the other microbatch is in the other stream; the fill/drain of the pipeline, min(A, B),
is paid once per step.

- "core-split" (decode): each stream owns its share of the cores (attention stream 16 of 24
  cube and 32 of 48 vector cores, MoE stream 8 and 16, paper §4.2.3); the attention stream runs
  attention, the other stream the FFN of the layer (router, dispatch, experts, combine; a dense
  layer's MLP). Stream A runs attention(0), attention(1), next layer's attention(0), ...; B runs
  FFN(0) while A runs attention(1), so a layer of two microbatches costs 2 max(A, B), A and B
  timed at their shares.
- "comm-compute" (prefill): all compute on one stream, dispatch/combine and the SP/TP collectives
  on the other, and the dependencies between them set what each transfer can hide behind. The
  layer's compute splits at its communication ops into segments X_0 (from the last transfer of
  one layer to the first of the next), X_1, ...; transfer c_j follows X_{j-1} and precedes X_j.
  The compute stream runs X_{j-1}(0), X_{j-1}(1), X_j(0), X_j(1), ..., so c_j of microbatch 0
  runs while X_{j-1} of microbatch 1 computes, and c_j of microbatch 1 while X_j of microbatch 0
  does; each window lasts as long as the longer of the two, and a layer is the sum of its 2n
  windows. A transfer longer than its window is exposed; a short compute segment next to a long
  transfer (prefill's dispatch right after attention, combine right after the experts) hides less
  than the layer-wide sum would suggest. The communication kernels are not free of the compute
  cores (`CommCores`):
  * on the 910C they run on the vector cores (FusedDispatch/FusedCombine write remote memory
    from the AIV cores, paper §4.2.1), which the window's vector kernels and its attention core (a
    mixed cube + vector kernel: softmax on the AIV) also need, so those serialise with the transfer:
    window = max(X, X_vector + c);
  * on NVIDIA GPUs DeepEP's normal kernels occupy `sm_share` of the SMs while they run (24 SMs,
    `Buffer.set_num_sms(24)` in DeepEP's README), slowing the window's compute meanwhile:
    window = c if X' <= c else c + X (1 - c / X'), X' = X with (1 - sm_share) of the cores.
In both modes the two streams share one HBM: a layer of two microbatches lasts at least the time
their summed bytes take on the bus.
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


@dataclass(frozen=True)
class _Segment:
    """The compute between two transfers: its time, the part that needs the vector cores, and its time on
    the cores a GPU's comm kernels leave."""

    time: float
    vector: float
    shared: float


def _segments(ops: Sequence[OpCost], cores: CommCores) -> tuple[list[_Segment], list[float]]:
    """(X_0 .. X_{n-1}, c_1 .. c_n) of one layer: X_0 joins the compute after the last transfer to the compute
    before the first (the next layer's start), adjacent transfers run back to back as one."""
    segs: list[list[float]] = [[0.0, 0.0, 0.0]]
    comms: list[float] = []
    prev_comm = False
    for op in ops:
        if op.kind == "comm":
            if prev_comm:
                comms[-1] += op.comm_time
            else:
                comms.append(op.comm_time)
                segs.append([0.0, 0.0, 0.0])
            prev_comm = True
            continue
        prev_comm = False
        s = segs[-1]
        s[0] += op.time
        if _needs_vector_cores(op):
            s[1] += op.time
        if cores.sm_share > 0:
            s[2] += op.time_with_share(1 - cores.sm_share)
    if comms:  # the tail after the last transfer runs before the next layer's first segment
        tail = segs.pop()
        segs[0] = [x + y for x, y in zip(tail, segs[0], strict=True)]
    return [_Segment(*s) for s in segs], comms


def _window(x: _Segment, c: float, cores: CommCores) -> float:
    """One compute segment of one microbatch while a transfer of the other runs."""
    t = max(x.time, c)
    if cores.vector_cores:
        t = max(t, x.vector + c)
    if cores.sm_share > 0 and c > 0 and x.shared > c:
        t = max(t, c + x.time * (1 - c / x.shared))
    return t


def _comm_compute_layer(ops: Sequence[OpCost], cores: CommCores) -> float:
    """A layer of two microbatches on the compute and communication streams (module docstring)."""
    segs, comms = _segments(ops, cores)
    if not comms:
        return 2 * segs[0].time
    n = len(comms)
    # c_j (j = 1..n, comms[j - 1]) of microbatch 0 runs beside X_{j-1} of microbatch 1, of microbatch 1 beside X_j
    return sum(
        _window(segs[j - 1], comms[j - 1], cores) + _window(segs[j % n], comms[j - 1], cores) for j in range(1, n + 1)
    )


def layer_time(
    ops: Sequence[OpCost], microbatches: int, mode: str, attn_share: float, cores: CommCores | None = None
) -> tuple[float, float]:
    """(steady-state time per layer, fill time) for `ops` built for one microbatch."""
    if microbatches == 1:
        return sum(op.time for op in ops), 0.0
    a, b = stream_times(ops, mode, attn_share)
    # microbatches is 1 or 2 (Deployment.validate)
    layer = _comm_compute_layer(ops, cores or CommCores()) if mode == "comm-compute" else microbatches * max(a, b)
    # The two streams share one HBM: while each runs one microbatch, all of that microbatch's bytes
    # cross the same memory bus, so a pair lasts at least their sum at the die's bandwidth.
    layer = max(layer, microbatches * sum(op.memory_time for op in ops if op.kind != "comm"))
    return layer, min(a, b)
