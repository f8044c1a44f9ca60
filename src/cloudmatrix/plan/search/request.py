"""What a plan is asked for: model, systems, traffic, latency targets, chip and budget limits."""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.user_input import read_text

# Share of a pool's capacity the plan may use: a queue at 100% grows without bound (assumption, docs/plan.md).
DEFAULT_MAX_UTILISATION = 0.85
# Per-draft MTP acceptance when the user gives none: CloudMatrix-Infer's 70% (Zuo et al., arXiv 2506.12708, §5).
DEFAULT_MTP_ACCEPTANCE = 0.7


@dataclass(frozen=True)
class PlanRequest:
    model: str = "deepseek-r1"
    systems: tuple[str, ...] = ("cloudmatrix384",)
    isl: int = 4096  # input tokens per request
    osl: int = 256  # output tokens per request
    rate: float | None = None  # requests/s (open loop); None with no concurrency: the most the system sustains
    concurrency: int | None = None  # closed-loop clients
    ttft_p90: float = 10.0  # seconds
    tpot_p90: float = 0.050  # seconds
    chips: int | None = None  # at most this many chips (default: the whole system; HGX: 16 nodes)
    budget_usd: float | None = None  # price of the chips the plan uses (pro rata of the system's price)
    budget_kw: float | None = None  # power of the chips the plan uses
    mtp_acceptance: float = DEFAULT_MTP_ACCEPTANCE
    max_utilisation: float = DEFAULT_MAX_UTILISATION
    modes: tuple[str, ...] = ("disaggregated", "colocated")
    top_k: int = 4  # candidates confirmed by simulation, per system
    confirm: bool = True
    sim_seconds: float = 30.0  # simulated seconds measured per confirmation (after the warm-up)
    workers: int = 2  # local processes for confirmation
    seed: int = 0

    @property
    def capacity_mode(self) -> bool:
        return self.rate is None and self.concurrency is None

    def validate(self) -> PlanRequest:
        if not self.systems:
            raise CloudMatrixError("give at least one --system")
        if self.isl < 1 or self.osl < 2:
            raise CloudMatrixError(f"--isl must be >= 1 and --osl >= 2 tokens, got {self.isl} and {self.osl}")
        if self.rate is not None and self.concurrency is not None:
            raise CloudMatrixError("give --rate (open loop) or --concurrency (closed loop), not both")
        for name in ("rate", "ttft_p90", "tpot_p90", "budget_usd", "budget_kw", "sim_seconds"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise CloudMatrixError(f"{name.replace('_', '-')} must be a positive finite number, got {v!r}")
        for name in ("concurrency", "chips", "top_k", "workers"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise CloudMatrixError(f"{name.replace('_', '-')} must be a whole number >= 1, got {v!r}")
        if not 0 <= self.mtp_acceptance <= 1:
            raise CloudMatrixError(f"--mtp-acceptance is a probability in [0, 1], got {self.mtp_acceptance}")
        if not 0 < self.max_utilisation < 1:
            raise CloudMatrixError(f"--max-utilisation must be in (0, 1), got {self.max_utilisation}")
        bad = set(self.modes) - {"disaggregated", "colocated"}
        if bad or not self.modes:
            raise CloudMatrixError(f"modes must be 'disaggregated' and/or 'colocated', got {list(self.modes)}")
        return self

    def traffic_label(self) -> str:
        if self.rate is not None:
            load = f"{self.rate:g} req/s"
        elif self.concurrency is not None:
            load = f"{self.concurrency} clients"
        else:
            load = "max sustainable rate"
        return (
            f"{self.isl}/{self.osl} tokens, {load}, TTFT p90 <= {self.ttft_p90:g} s, "
            f"TPOT p90 <= {self.tpot_p90 * 1e3:g} ms"
        )


def load_plan_request(path: str | Path, **overrides) -> PlanRequest:
    """A PlanRequest from a TOML file with the same keys (systems as a list); `overrides` win."""
    text = read_text(path, "plan request")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CloudMatrixError(f"{path}: not valid TOML ({e})") from None
    known = {f.name for f in fields(PlanRequest)}
    unknown = set(data) - known
    if unknown:
        raise CloudMatrixError(f"{path}: unknown key(s) {sorted(unknown)}; the keys are {sorted(known)}")
    for k in ("systems", "modes"):
        if k in data:
            v = data[k]
            data[k] = (v,) if isinstance(v, str) else tuple(v)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return PlanRequest(**data).validate()
    except TypeError as e:
        raise CloudMatrixError(f"{path}: {e}") from None
