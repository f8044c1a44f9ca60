"""What a step costs: per-op rows, the overlapped step time, the physical limit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property


@dataclass(frozen=True)
class OpRow:
    """One op aggregated over a step on one die (all layers and microbatches that run it)."""

    name: str
    group: str  # "moe_layer", "dense_layer", "mtp_layer", "head"
    runs: int  # runs per step
    time: float  # seconds per step, serial (sum over runs)
    flops: float  # per step
    bytes: float  # per step (HBM, or link bytes for comm ops)
    bound: str  # "compute", "memory" or "comm"
    limit: float  # seconds per step at peak


@dataclass(frozen=True)
class StepBreakdown:
    """A step's cost. `step_time` is computed up front; the op table (`rows`, `serial_time`, `limit_time`)
    is built from `tabulate` on first use, because the simulator and planners read only the step time."""

    phase: str  # "decode" or "prefill"
    system: str
    model: str
    step_time: float  # seconds, with microbatch overlap
    tabulate: Callable[[], tuple[list[OpRow], float, float]] = field(repr=False, compare=False)
    tokens_per_die: float  # tokens this step produces (decode) or consumes (prefill), per die
    dies_per_chip: int
    seqs_per_die: float
    tokens_per_seq: float  # decode: output tokens per sequence per step (MTP); prefill: prompt length
    instance_dies: int = 0  # dies in the instance the step was costed for
    memory: dict[str, float] = field(default_factory=dict)  # bytes per die by use
    expert_load: dict[str, float] = field(default_factory=dict)
    host_time: float = 0.0  # seconds the serving stack's host spends issuing the step's ops (perf/host.py)

    @cached_property
    def _table(self) -> tuple[list[OpRow], float, float]:
        return self.tabulate()

    @property
    def rows(self) -> list[OpRow]:
        return self._table[0]

    @property
    def serial_time(self) -> float:
        """Seconds, every op one after another on the whole die."""
        return self._table[1]

    @property
    def limit_time(self) -> float:
        """Physical floor: every compute op at peak compute or peak bandwidth, communication hidden."""
        return self._table[2]

    @property
    def tokens_per_s_per_die(self) -> float:
        return self.tokens_per_die / self.step_time

    @property
    def tokens_per_s_per_chip(self) -> float:
        return self.tokens_per_s_per_die * self.dies_per_chip

    @property
    def limit_tokens_per_s_per_chip(self) -> float:
        return self.tokens_per_die * self.dies_per_chip / self.limit_time

    @property
    def tpot(self) -> float:
        """Decode: time per output token of one sequence (step time / tokens per step)."""
        return self.step_time / self.tokens_per_seq if self.phase == "decode" else float("nan")

    def dominant(self) -> OpRow:
        return max(self.rows, key=lambda r: r.time)

    def to_dict(self) -> dict:
        return {
            "phase": self.phase,
            "system": self.system,
            "model": self.model,
            "step_time_s": self.step_time,
            "serial_time_s": self.serial_time,
            "limit_time_s": self.limit_time,
            "tokens_per_die": self.tokens_per_die,
            "instance_dies": self.instance_dies,
            "seqs_per_die": self.seqs_per_die,
            "tokens_per_s_per_chip": self.tokens_per_s_per_chip,
            "limit_tokens_per_s_per_chip": self.limit_tokens_per_s_per_chip,
            "tpot_s": None if self.phase != "decode" else self.tpot,
            "ops": [r.__dict__ for r in self.rows],
            "memory_bytes_per_die": self.memory,
            "expert_load": self.expert_load,
            "host_time_s": self.host_time,
        }
