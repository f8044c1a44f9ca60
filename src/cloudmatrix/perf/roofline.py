"""One op's cost on a die: compute time, memory time, which bound wins.

time = max(flops / (peak * compute_eff * share), bytes / (bw * memory_eff * share)) for
compute ops; communication ops carry their own time from `comm`. `limit` is the
same op at 100% of peak and of bandwidth with the whole die: the physical floor.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
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

    @property
    def time(self) -> float:
        """Per run, whole die, no overlap."""
        return max(self.compute_time, self.memory_time, self.comm_time)

    @property
    def bound(self) -> str:
        if self.kind == "comm":
            return "comm"
        return "compute" if self.compute_time >= self.memory_time else "memory"

    def time_with_share(self, share: float) -> float:
        """Per run when the op's stream owns only `share` of the die's matrix/vector cores.

        Compute slows by 1/share. HBM bandwidth is not partitioned: the other stream spends much
        of its time in communication or compute, so memory-bound ops keep the full bandwidth
        (assumption). Communication is bound by the link and its sync protocol, not by cores."""
        if self.kind == "comm":
            return self.comm_time
        return max(self.compute_time / share, self.memory_time)


def gemm_efficiency(base: float, rows: float, half_rows: float) -> float:
    """Large-shape efficiency falling off for GEMMs with few rows (tokens): base * M / (M + half_rows)."""
    return base * rows / (rows + half_rows) if half_rows > 0 else base


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
) -> OpCost:
    return OpCost(
        name=name,
        stream=stream,
        count=count,
        flops=flops,
        bytes=nbytes,
        compute_time=flops / (peak * compute_eff),
        memory_time=nbytes / (bandwidth * memory_eff),
        comm_time=0.0,
        limit_time=max(flops / peak, nbytes / bandwidth),
    )


def comm_op(name: str, stream: str, count: int, nbytes: float, time: float, limit: float) -> OpCost:
    return OpCost(name, stream, count, 0.0, nbytes, 0.0, 0.0, time, limit, kind="comm")
