"""Seeded workloads as numpy arrays, and the `[workload]` scenario section.

A `Workload` is one row per request. Open-loop workloads carry arrival times;
closed-loop ones carry NaN arrivals plus a client count, and the runtime issues
each next request when a client's previous one finishes. Requests in a shared-prefix
group share the KV blocks of their first `prefix_len` tokens, which is what the
caching pool can reuse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cloudmatrix.errors import CloudMatrixError

# Lognormal truncation redraws values outside [min, max]; refuse when that would
# practically never end (under 0.1% of the mass inside).
_MIN_MASS = 1e-3


# ---- the request table ------------------------------------------------------------------
@dataclass(eq=False)
class Workload:
    """Requests as parallel arrays (index = request id).

    arrival_time [s], float64, NaN for closed-loop; input_len, output_len [tokens];
    prefix_group (-1 = none); prefix_len [tokens] of the prompt shared with the group
    (0 when none). `concurrency` is the client count of a closed-loop workload.
    """

    arrival_time: np.ndarray
    input_len: np.ndarray
    output_len: np.ndarray
    prefix_group: np.ndarray
    prefix_len: np.ndarray
    concurrency: int | None = None

    def __post_init__(self) -> None:
        self.arrival_time = np.asarray(self.arrival_time, dtype=np.float64)
        for name in ("input_len", "output_len", "prefix_group", "prefix_len"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        n = self.arrival_time.size
        for name in ("input_len", "output_len", "prefix_group", "prefix_len"):
            if getattr(self, name).shape != (n,):
                raise CloudMatrixError(f"workload column {name} has {getattr(self, name).size} rows, not {n}.")
        if n and (self.input_len.min() < 1 or self.output_len.min() < 1):
            raise CloudMatrixError("every request needs input_len >= 1 and output_len >= 1 tokens.")
        grouped = self.prefix_group >= 0
        if n and (self.prefix_group.min() < -1 or (self.prefix_len[~grouped] != 0).any()):
            raise CloudMatrixError("prefix_group must be >= -1 and requests without a group need prefix_len 0.")
        if (self.prefix_len < 0).any() or (self.prefix_len > self.input_len).any():
            raise CloudMatrixError("prefix_len must lie in [0, input_len] for every request.")
        if self.concurrency is None:
            if np.isnan(self.arrival_time).any():
                raise CloudMatrixError("open-loop workloads need an arrival time for every request.")
            if n and (np.diff(self.arrival_time) < 0).any():
                raise CloudMatrixError("arrival times must be non-decreasing; sort the requests by arrival.")
        elif self.concurrency < 1:
            raise CloudMatrixError(f"closed-loop concurrency must be >= 1, got {self.concurrency}.")

    def __len__(self) -> int:
        return self.arrival_time.size

    @property
    def closed_loop(self) -> bool:
        return self.concurrency is not None

    @property
    def num_groups(self) -> int:
        return int(self.prefix_group.max()) + 1 if len(self) else 0

    def prompt_blocks(self, block_size: int) -> np.ndarray:
        """Full KV blocks of each prompt (the cacheable ones)."""
        return self.input_len // _check_block_size(block_size)

    def shared_blocks(self, block_size: int) -> np.ndarray:
        """Full blocks of each prompt that lie inside its group's shared prefix."""
        return self.prefix_len // _check_block_size(block_size)

    def block_hashes_for(self, request_index: int, block_size: int) -> np.ndarray:
        """Block hashes of request `request_index`'s full prompt blocks (int64, >= 0).

        Blocks inside the shared prefix hash from (group, block index), so the whole
        group shares them; every other block hashes from (request, block index) and is
        unique. The keys are distinct 64-bit values fed to a bijective mixer, so
        distinct blocks only collide through the final 63-bit mask (negligible).
        """
        i = int(request_index)
        bs = _check_block_size(block_size)
        n_full = int(self.input_len[i]) // bs
        n_shared = int(self.prefix_len[i]) // bs  # 0 when ungrouped
        key = np.arange(n_full, dtype=np.uint64)
        if n_shared:
            key[:n_shared] += np.uint64(_SHARED | (int(self.prefix_group[i]) << 24))
        key[n_shared:] += np.uint64(i << 24)
        return _mix_to_int64(key)

    def block_hashes_bulk(self, indices: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
        """`block_hashes_for` for many requests at once: (flat hashes, offsets).

        Request indices[k] owns flat[offsets[k]:offsets[k + 1]].
        """
        idx = np.asarray(indices, dtype=np.int64)
        bs = _check_block_size(block_size)
        n_full = self.input_len[idx] // bs
        n_shared = self.prefix_len[idx] // bs
        offsets = np.zeros(idx.size + 1, dtype=np.int64)
        np.cumsum(n_full, out=offsets[1:])
        j = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], n_full)
        shared = j < np.repeat(n_shared, n_full)
        owner = np.where(shared, np.repeat(self.prefix_group[idx], n_full), np.repeat(idx, n_full))
        key = (owner.astype(np.uint64) << np.uint64(24)) | j.astype(np.uint64)
        key[shared] |= np.uint64(_SHARED)
        return _mix_to_int64(key), offsets

    def head(self, n: int) -> Workload:
        """The first `n` requests."""
        return Workload(
            self.arrival_time[:n], self.input_len[:n], self.output_len[:n],
            self.prefix_group[:n], self.prefix_len[:n], self.concurrency,
        )  # fmt: skip


def _check_block_size(block_size: int) -> int:
    if block_size < 1:
        raise CloudMatrixError(f"block_size must be >= 1 token, got {block_size}.")
    return int(block_size)


# Block keys: bit 63 marks a shared-prefix block, bits 24..62 the group or request, bits
# 0..23 the block index (prompts up to 16M blocks).
_SHARED = 1 << 63


def _mix_to_int64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (a bijection on uint64, in place) masked to a non-negative int64."""
    x += np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    x &= np.uint64((1 << 63) - 1)
    return x.view(np.int64)


# ---- arrivals ---------------------------------------------------------------------------
def poisson_arrivals(rate: float, rng: np.random.Generator, *, n: int | None = None,
                     duration: float | None = None) -> np.ndarray:  # fmt: skip
    """Arrival times [s] of a Poisson process at `rate` requests/s (n requests, or all before duration)."""
    return gamma_arrivals(rate, 1.0, rng, n=n, duration=duration)


def gamma_arrivals(rate: float, cv: float, rng: np.random.Generator, *, n: int | None = None,
                   duration: float | None = None) -> np.ndarray:  # fmt: skip
    """Renewal process with gamma inter-arrivals: mean 1/rate, coefficient of variation `cv`.

    cv = 1 is Poisson; cv > 1 is burstier, cv < 1 more regular.
    """
    if not (rate > 0 and math.isfinite(rate)):
        raise CloudMatrixError(f"arrival rate must be a finite number > 0 requests/s, got {rate}.")
    if not (cv > 0 and math.isfinite(cv)):
        raise CloudMatrixError(f"arrival cv must be a finite number > 0, got {cv}.")
    if (n is None) == (duration is None):
        raise CloudMatrixError("give exactly one of num_requests and duration.")
    shape = 1.0 / cv**2
    scale = 1.0 / (rate * shape)

    def gaps(k: int) -> np.ndarray:
        return rng.exponential(1.0 / rate, k) if cv == 1.0 else rng.gamma(shape, scale, k)

    if n is not None:
        return np.cumsum(gaps(int(n)))
    expected = rate * duration
    chunk = int(expected + 6 * math.sqrt(expected) * max(cv, 1.0) + 16)
    times = np.cumsum(gaps(chunk))
    while times[-1] < duration:  # rarely taken: the first chunk covers the window
        times = np.concatenate([times, times[-1] + np.cumsum(gaps(chunk))])
    return times[times < duration]


# ---- lengths ----------------------------------------------------------------------------
class LengthSpec(BaseModel):
    """A token-length distribution. In TOML a bare integer means a constant.

    constant: value. uniform: integers lo..hi inclusive. lognormal: mean [tokens] and
    either sigma (of the log) or cv (of the length); optional min/max truncate it
    (out-of-range draws are redrawn, never clamped). Draws round to integers >= 1.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["constant", "uniform", "lognormal"]
    value: int | None = Field(default=None, ge=1)
    lo: int | None = Field(default=None, ge=1)
    hi: int | None = Field(default=None, ge=1)
    mean: float | None = Field(default=None, gt=0)
    sigma: float | None = Field(default=None, gt=0)
    cv: float | None = Field(default=None, gt=0)
    min: int | None = Field(default=None, ge=1)
    max: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _fields_match_kind(self) -> LengthSpec:
        allowed = {"constant": {"value"}, "uniform": {"lo", "hi"},
                   "lognormal": {"mean", "sigma", "cv", "min", "max"}}[self.kind]  # fmt: skip
        given = {k for k in ("value", "lo", "hi", "mean", "sigma", "cv", "min", "max") if getattr(self, k) is not None}
        if given - allowed:
            raise ValueError(
                f"{sorted(given - allowed)} do not apply to kind={self.kind!r} (it takes {sorted(allowed)})"
            )
        if self.kind == "constant" and self.value is None:
            raise ValueError("kind='constant' needs value")
        if self.kind == "uniform" and (self.lo is None or self.hi is None or self.lo > self.hi):
            raise ValueError("kind='uniform' needs lo <= hi")
        if self.kind == "lognormal":
            if self.mean is None or (self.sigma is None) == (self.cv is None):
                raise ValueError("kind='lognormal' needs mean and exactly one of sigma or cv")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(f"min ({self.min}) is above max ({self.max})")
            if self._mass_inside() < _MIN_MASS:
                raise ValueError(
                    f"under {_MIN_MASS:.1%} of this lognormal lies in [min, max]; move the bounds toward "
                    f"the mean ({self.mean}) or widen them"
                )
        return self

    def _log_params(self) -> tuple[float, float]:
        s2 = self.sigma**2 if self.sigma is not None else math.log1p(self.cv**2)
        return math.log(self.mean) - s2 / 2, math.sqrt(s2)

    def _mass_inside(self) -> float:
        mu, s = self._log_params()

        def cdf(x: float) -> float:
            return 0.0 if x <= 0 else 0.5 * (1 + math.erf((math.log(x) - mu) / (s * math.sqrt(2))))

        lo = (self.min if self.min is not None else 1) - 0.5
        hi = cdf(self.max + 0.5) if self.max is not None else 1.0
        return hi - cdf(lo)

    @property
    def min_value(self) -> int:
        """Smallest length this distribution can produce."""
        if self.kind == "constant":
            return self.value  # type: ignore[return-value]
        if self.kind == "uniform":
            return self.lo  # type: ignore[return-value]
        return self.min or 1

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "constant":
            return np.full(n, self.value, dtype=np.int64)
        if self.kind == "uniform":
            return rng.integers(self.lo, self.hi + 1, size=n, dtype=np.int64)
        mu, s = self._log_params()
        lo, hi = self.min or 1, self.max or np.iinfo(np.int64).max
        out = np.rint(rng.lognormal(mu, s, n))
        bad = np.flatnonzero((out < lo) | (out > hi))
        while bad.size:  # redraw only the rejected ones; terminates: mass inside >= 0.1%
            out[bad] = np.rint(rng.lognormal(mu, s, bad.size))
            bad = bad[(out[bad] < lo) | (out[bad] > hi)]
        return out.astype(np.int64)


def _length_from_toml(v: Any) -> Any:
    if isinstance(v, int) and not isinstance(v, bool):
        return {"kind": "constant", "value": v}
    return v


class PrefixSpec(BaseModel):
    """Shared-prefix groups (system prompts, documents, multi-turn history).

    A `fraction` of requests joins one of `groups` groups (chosen by `popularity`) and
    shares its first `prefix_len` tokens. mode 'within': the prefix is part of the
    drawn input length (which must then be >= prefix_len); 'prepend': the prompt is
    prefix_len + the drawn length.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    groups: int = Field(ge=1)
    prefix_len: int = Field(ge=1)
    popularity: Literal["uniform", "zipf"] = "uniform"
    s: float = Field(default=1.0, ge=0)
    fraction: float = Field(default=1.0, ge=0, le=1)
    mode: Literal["within", "prepend"] = "within"


# ---- the scenario section ---------------------------------------------------------------
class WorkloadSpec(BaseModel):
    """The `[workload]` section of a scenario.

    kind: 'poisson' (rate), 'gamma' (rate, cv), 'closed' (concurrency clients,
    num_requests in all), 'trace' (a CSV/JSONL file; with concurrency it is replayed
    closed-loop). Open-loop kinds take num_requests or duration [s].
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["poisson", "gamma", "closed", "trace"]
    rate: float | None = Field(default=None, gt=0)
    cv: float | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, ge=1)
    num_requests: int | None = Field(default=None, ge=1)
    duration: float | None = Field(default=None, gt=0)
    input_len: LengthSpec | None = None
    output_len: LengthSpec | None = None
    prefix: PrefixSpec | None = None
    trace: str | None = None
    seed: int = 0

    @field_validator("input_len", "output_len", mode="before")
    @classmethod
    def _bare_int_is_constant(cls, v: Any) -> Any:
        return _length_from_toml(v)

    @model_validator(mode="after")
    def _fields_match_kind(self) -> WorkloadSpec:
        takes = {
            "poisson": {"rate", "num_requests", "duration", "input_len", "output_len", "prefix"},
            "gamma": {"rate", "cv", "num_requests", "duration", "input_len", "output_len", "prefix"},
            "closed": {"concurrency", "num_requests", "input_len", "output_len", "prefix"},
            "trace": {"trace", "concurrency", "num_requests"},
        }[self.kind]
        optional = {"prefix", "duration", "num_requests"} | ({"concurrency"} if self.kind == "trace" else set())
        keys = (
            "rate",
            "cv",
            "concurrency",
            "num_requests",
            "duration",
            "input_len",
            "output_len",
            "prefix",
            "trace",
        )
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
            raise CloudMatrixError(f"{where}: {_describe(e)}") from None

    def build(self, base_dir: str | Path | None = None) -> Workload:
        """Generate the workload (a relative trace path is resolved against base_dir)."""
        return generate_workload(self, base_dir)


def _describe(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"] if not str(x).startswith("function-"))
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key {loc!r}; remove it or check its spelling")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


# ---- generation -------------------------------------------------------------------------
def generate_workload(spec: WorkloadSpec, base_dir: str | Path | None = None) -> Workload:
    """Draw the requests of `spec`. Independent streams per column keep, e.g., the arrivals
    unchanged when only the length distribution changes."""
    if spec.kind == "trace":
        from cloudmatrix.sim.workload_trace import read_trace

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
    return Workload(arrival, input_len, output_len, group, prefix_len, spec.concurrency)


def group_popularity(groups: int, kind: str, s: float = 1.0) -> np.ndarray:
    """Probability of each prefix group: uniform, or zipf (group g ∝ 1/(g+1)**s)."""
    if kind == "uniform":
        return np.full(groups, 1.0 / groups)
    if kind == "zipf":
        w = 1.0 / np.arange(1, groups + 1, dtype=np.float64) ** s
        return w / w.sum()
    raise CloudMatrixError(f"unknown prefix popularity {kind!r}; use 'uniform' or 'zipf'.")
