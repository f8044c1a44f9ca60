"""The `[workload]` scenario section and drawing its requests (seeded, one stream per column)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.sim.workload.arrivals import gamma_arrivals
from cloudmatrix.sim.workload.lengths import LengthSpec, length_from_toml
from cloudmatrix.sim.workload.prefixes import PrefixSpec, group_popularity
from cloudmatrix.sim.workload.requests import RequestTable
from cloudmatrix.sim.workload.traces import read_trace

# The runtime keeps ~15 float/int columns per request (~120 bytes): 10M requests is ~1.2 GB.
MAX_REQUESTS = 10_000_000


class WorkloadSpec(BaseModel):
    """The `[workload]` section of a scenario.

    kind: 'poisson' (rate), 'gamma' (rate, cv), 'closed' (concurrency clients,
    num_requests in all), 'trace' (a CSV/JSONL file; with concurrency it is replayed
    closed-loop). Open-loop kinds take num_requests or duration [s].
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: Literal["poisson", "gamma", "closed", "trace"]
    rate: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    cv: float | None = Field(default=None, gt=0, le=100, allow_inf_nan=False)
    concurrency: int | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    num_requests: int | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    duration: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    input_len: LengthSpec | None = None
    output_len: LengthSpec | None = None
    prefix: PrefixSpec | None = None
    trace: str | None = None
    seed: int = Field(default=0, ge=0)

    @field_validator("input_len", "output_len", mode="before")
    @classmethod
    def _bare_int_is_constant(cls, v: Any) -> Any:
        return length_from_toml(v)

    @model_validator(mode="after")
    def _fields_match_kind(self) -> WorkloadSpec:
        takes = {
            "poisson": {"rate", "num_requests", "duration", "input_len", "output_len", "prefix"},
            "gamma": {"rate", "cv", "num_requests", "duration", "input_len", "output_len", "prefix"},
            "closed": {"concurrency", "num_requests", "input_len", "output_len", "prefix"},
            "trace": {"trace", "concurrency", "num_requests"},
        }[self.kind]
        optional = {"prefix", "duration", "num_requests"} | ({"concurrency"} if self.kind == "trace" else set())
        keys = ("rate", "cv", "concurrency", "num_requests", "duration", "input_len", "output_len", "prefix", "trace")
        given = {k for k in keys if getattr(self, k) is not None}
        if given - takes:
            raise ValueError(f"{sorted(given - takes)} do not apply to kind={self.kind!r}; remove them")
        missing = takes - optional - given
        if missing:
            raise ValueError(f"kind={self.kind!r} needs {sorted(missing)}")
        if self.kind in ("poisson", "gamma") and (self.num_requests is None) == (self.duration is None):
            raise ValueError("give exactly one of num_requests and duration")
        if self.kind == "closed" and self.num_requests is None:
            raise ValueError("kind='closed' needs num_requests")
        if self.duration is not None and self.rate * self.duration > MAX_REQUESTS:  # type: ignore[operator]
            raise ValueError(
                f"rate x duration = {self.rate * self.duration:,.0f} requests, over the {MAX_REQUESTS:,} the "  # type: ignore[operator]
                "simulator holds; lower the rate or the duration"
            )
        p, lengths = self.prefix, self.input_len
        if p is not None and lengths is not None and p.mode == "within" and lengths.min_value < p.prefix_len:
            raise ValueError(
                f"input_len can be {lengths.min_value} tokens, shorter than prefix.prefix_len="
                f"{p.prefix_len}; raise the input length minimum, shorten the prefix, "
                "or use prefix.mode='prepend'"
            )
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "[workload]") -> WorkloadSpec:
        """Validate a parsed TOML section; errors name the offending key."""
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise CloudMatrixError(f"{where}: {describe_errors(e)}") from None

    def build(self, base_dir: str | Path | None = None) -> RequestTable:
        """Draw the requests (a relative trace path is resolved against base_dir)."""
        return generate_workload(self, base_dir)


def describe_errors(e: ValidationError) -> str:
    """A pydantic error as one line that names each offending key."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith("function-"))
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key {loc!r}; remove it or check its spelling")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def generate_workload(spec: WorkloadSpec, base_dir: str | Path | None = None) -> RequestTable:
    """Draw the requests of `spec`. Independent streams per column keep, e.g., the arrivals
    unchanged when only the length distribution changes."""
    if spec.kind == "trace":
        path = Path(spec.trace)  # type: ignore[arg-type]
        if base_dir is not None and not path.is_absolute():
            path = Path(base_dir) / path
        w = read_trace(path, concurrency=spec.concurrency)
        if spec.num_requests is not None:
            if spec.num_requests > len(w):
                raise CloudMatrixError(
                    f"num_requests={spec.num_requests} but trace {path} has only {len(w)} requests; "
                    "lower num_requests or drop it to replay the whole trace."
                )
            w = w.head(spec.num_requests)
        return w

    r_arr, r_in, r_out, r_member, r_group = (
        np.random.default_rng(s) for s in np.random.SeedSequence(spec.seed).spawn(5)
    )
    if spec.kind == "closed":
        n = int(spec.num_requests)  # type: ignore[arg-type]
        arrival = np.full(n, np.nan)
    else:
        cv = spec.cv if spec.kind == "gamma" else 1.0
        arrival = gamma_arrivals(spec.rate, cv, r_arr, n=spec.num_requests, duration=spec.duration)  # type: ignore[arg-type]
        n = arrival.size
    input_len = spec.input_len.sample(n, r_in)  # type: ignore[union-attr]
    output_len = spec.output_len.sample(n, r_out)  # type: ignore[union-attr]
    group = np.full(n, -1, dtype=np.int64)
    prefix_len = np.zeros(n, dtype=np.int64)
    if spec.prefix is not None:
        p = spec.prefix
        member = r_member.random(n) < p.fraction
        weights = group_popularity(p.groups, p.popularity, p.s)
        group[member] = r_group.choice(p.groups, size=int(member.sum()), p=weights)
        prefix_len[member] = p.prefix_len
        if p.mode == "prepend":
            input_len = input_len + prefix_len
    return RequestTable(arrival, input_len, output_len, group, prefix_len, spec.concurrency)


def expected_requests(spec: WorkloadSpec) -> float:
    """Requests the spec will draw (math.inf when unknown before reading a trace)."""
    if spec.num_requests is not None:
        return spec.num_requests
    if spec.duration is not None and spec.rate is not None:
        return spec.rate * spec.duration
    return math.inf
