"""The op record: one op's cost on one die (compute, memory, fixed latency, communication) and its bound.

time = latency + max(compute_time, memory_time) for compute ops; communication ops carry their
own time (`comm_time`, latency included) from `comm` or `kernels.collective`. `limit_time` is the
same op at 100% of peak and of bandwidth with the whole die and no fixed cost: the physical floor.
The kernel time functions that fill these records live in `cloudmatrix.perf.kernels`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OpCost:
    name: str
    stream: str  # "attn" or "moe": which stream runs it when two microbatches overlap
    count: int  # how many times it runs per step (layers)
    flops: float  # per run
    bytes: float  # HBM bytes per run
    compute_time: float  # per run, at calibrated efficiency, whole die
    memory_time: float
    comm_time: float  # per run, for communication ops (0 for compute ops)
    limit_time: float  # per run at peak, whole die
    kind: str = "compute"  # "compute" or "comm"
    latency: float = 0.0  # fixed cost per run (kernel launch, prologue, tail wave), not shortened by a larger die share

    @property
    def time(self) -> float:
        """Per run, whole die, no overlap."""
        return self.latency + max(self.compute_time, self.memory_time, self.comm_time)

    @property
    def bound(self) -> str:
        if self.kind == "comm":
            return "comm"
        if self.latency > max(self.compute_time, self.memory_time):
            return "latency"
        return "compute" if self.compute_time >= self.memory_time else "memory"

    def time_with_share(self, share: float) -> float:
        """Per run when the op's stream owns only `share` of the die's matrix/vector cores.

        Compute slows by 1/share. Memory-bound ops are assumed to keep the die's full HBM bandwidth
        (an assumption, not a measurement: it holds only while the other stream is not memory-bound
        too). Communication ops are returned unchanged here, which is exact only where the transfer
        engine is separate from the compute cores; on the 910C dispatch/combine run on the vector
        cores the compute stream also uses (paper §4.2.3), which the step model must cost itself."""
        if self.kind == "comm":
            return self.comm_time
        return self.latency + max(self.compute_time / share, self.memory_time)


def compute_op(
    name: str,
    stream: str,
    count: int,
    flops: float,
    nbytes: float,
    peak: float,
    compute_eff: float,
    bandwidth: float,
    memory_eff: float,
    latency: float = 0.0,
) -> OpCost:
    return OpCost(
        name,
        stream,
        count,
        flops,
        nbytes,
        flops / (peak * compute_eff),
        nbytes / (bandwidth * memory_eff),
        0.0,
        max(flops / peak, nbytes / bandwidth),
        "compute",
        latency,
    )


def comm_op(name: str, stream: str, count: int, nbytes: float, time: float, limit: float) -> OpCost:
    return OpCost(name, stream, count, 0.0, nbytes, 0.0, 0.0, time, limit, kind="comm")
