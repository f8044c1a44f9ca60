"""Serving-stack profiles: how a stack issues its kernels, read from TOML files in catalog/backends/.

A kernel model costs what the device does; a serving stack also spends *host* time issuing each op
(Python, the framework's dispatcher, the driver's launch call). A profile says, per phase, whether the
stack captures the step in a graph (one launch per step) or runs it eagerly (the host issues every op),
what the host pays per op, and how many ops each layer issues. `perf/host.py` turns it into host time;
`perf/step.py` overlaps it with the device's.

A profile also says how the stack schedules: `[scheduling]`, a colocated instance's step defaults
(`sim/scheduling.py`, which a pool's keys override), and `[handoff]`, its prefill -> decode protocol in
disaggregated serving (`sim/disaggregated.py`); each value cites its source in the TOML.

A Deployment's or scenario pool's `backend` selects a profile by name or .toml path. None is the twin's
default, CloudMatrix-Infer's ("cloudmatrix-infer", `DEFAULT_BACKEND`), for everything a profile says: its host
cost, its schedule and hand-off, and its kernels (none named: the chip's default fit). A profile's `kernels`
names the kernel-curve set of `specs/hardware.py` (`[efficiency.backend.<name>]`) the stack's kernels follow.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.specs.hardware import BACKENDS, Seconds
from cloudmatrix.user_input import read_text

DEFAULT_BACKEND = "cloudmatrix-infer"
LAYER_GROUPS = ("moe_layer", "dense_layer", "mtp_layer", "head")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class OpsPerSeq(_Frozen):
    """Extra ops per sequence in the step (a stack that loops over sequences in Python); 0 for batched kernels."""

    moe_layer: float = Field(default=0.0, ge=0)
    dense_layer: float = Field(default=0.0, ge=0)
    mtp_layer: float = Field(default=0.0, ge=0)
    head: float = Field(default=0.0, ge=0)


class PhaseOps(_Frozen):
    """Ops the host issues per layer (and once per step: `head`, i.e. embedding, final norm, LM head,
    sampling and the step's metadata), in one phase."""

    moe_layer: float = Field(ge=0)
    dense_layer: float = Field(ge=0)
    mtp_layer: float = Field(ge=0)
    head: float = Field(ge=0)
    per_expert_hit: float = Field(default=0.0, ge=0)  # a MoE layer that loops over the experts its tokens hit
    per_seq: OpsPerSeq = OpsPerSeq()

    def per_layer(self, group: str, seqs: float, experts_hit: float) -> float:
        """Ops one layer of `group` issues for a step of `seqs` sequences whose MoE layers hit `experts_hit`."""
        base = getattr(self, group) + getattr(self.per_seq, group) * seqs
        if group in ("moe_layer", "mtp_layer"):
            base += self.per_expert_hit * experts_hit
        return base


class HostCost(_Frozen):
    per_op: Seconds  # host seconds to issue one op eagerly (Python + framework dispatch + launch call)
    graph_launch: Seconds = 0.0  # host seconds to launch one captured graph (a graphed step)
    step_overhead: Seconds = 0.0  # host seconds per step outside the forward (scheduler), where sourced


class Phases(_Frozen):
    decode: Literal["graph", "eager"]
    prefill: Literal["graph", "eager"]


class _Strict(_Frozen):
    # `chunked = "yes"` or `recv_interval = 1.5` is an error, not coerced
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Scheduling(_Strict):
    """A colocated instance's step scheduling (sim/scheduling.py says what each key does)."""

    prefill: Literal["mixed", "separate"]
    chunked: bool
    overlap: bool
    recv_interval: int = Field(ge=1)
    balance_timeout: int = Field(ge=0)
    # TensorRT-LLM's delayed batching (batch_wait_timeout_iters, batch_wait_max_tokens_ratio); 0: off, the LLM
    # API's default, so a profile that never batches leaves them out
    batch_wait_iters: int = Field(default=0, ge=0)
    batch_wait_ratio: float = Field(default=0.0, ge=0, le=1)
    # how a decode (or colocated) instance spreads new requests over its attention-DP ranks: to the rank with the
    # fewest sequences, or to the next rank in turn at arrival (serving/decode_scheduler.py)
    dp_routing: Literal["least_loaded", "round_robin"] = "least_loaded"


class HandOff(_Strict):
    """A serving stack's prefill -> decode hand-off, as the client sees it."""

    routing: Literal["least_loaded", "round_robin"]  # picks the decode instance (serving/router.py DECODE_ROUTING)
    first_token_after_step: bool  # the first token reaches the client with the decode worker's first step
    pull_after_admission: bool  # the decode worker pulls a request's KV once it has given it a slot
    # the prefill starts a prompt only once the decode instance's scheduler has taken the request in (at its next
    # poll: a step boundary, every `recv_interval` decode steps, at once when idle) and reserved its KV; False: the
    # prefill does not wait for the decode side (stacks whose decode worker is chosen after the prefill)
    prefill_after_decode_intake: bool = False


class BackendProfile(_Frozen):
    name: str
    description: str
    kernels: str | None = None  # kernel-curve set in the hardware TOMLs (one of specs.hardware.BACKENDS)
    # "async": the host enqueues launches ahead of the device (CUDA/CANN streams), so a step costs the larger
    # of the two; "serial": host and kernels share one core (a CPU engine), so they add
    overlap: Literal["async", "serial"] = "async"
    phases: Phases
    host: HostCost
    ops: dict[Literal["prefill", "decode"], PhaseOps] = {}  # needed for every eager phase
    scheduling: Scheduling
    handoff: HandOff

    @field_validator("kernels")
    @classmethod
    def _known_kernels(cls, v: str | None) -> str | None:
        if v is not None and v not in BACKENDS:
            raise ValueError(f"unknown kernel-curve set {v!r}; use one of {', '.join(BACKENDS)} or leave it out")
        return v

    @model_validator(mode="after")
    def _eager_phases_have_ops(self) -> BackendProfile:
        for phase in ("prefill", "decode"):
            if getattr(self.phases, phase) == "eager" and phase not in self.ops:
                raise ValueError(f"{phase} is eager but [ops.{phase}] is missing; give its ops per layer")
        return self


def _catalog_dir() -> Path:
    return Path(str(resources.files("cloudmatrix.specs") / "catalog" / "backends"))


def backend_names() -> list[str]:
    """Names of the shipped profiles."""
    return sorted(p.stem for p in _catalog_dir().glob("*.toml"))


def _resolve(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml":
        if not p.exists():
            raise CloudMatrixError(f"backend profile file {p} does not exist")
        return p.resolve()
    shipped = _catalog_dir() / f"{name_or_path}.toml"
    if shipped.exists():
        return shipped
    raise CloudMatrixError(
        f"unknown backend {str(name_or_path)!r}; known: {', '.join(backend_names())} (or a path to a .toml profile)"
    )


@cache
def _load(path: Path) -> BackendProfile:
    try:
        data = tomllib.loads(read_text(path, "backend profile"))
    except tomllib.TOMLDecodeError as e:
        raise CloudMatrixError(f"{path}: not valid TOML ({e}); fix the syntax") from None
    try:
        return BackendProfile.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise CloudMatrixError(f"{path}: {where}: {err['msg'].removeprefix('Value error, ')}") from None


@cache
def load_backend(name_or_path: str | Path | None) -> BackendProfile:
    """A profile by name ("sglang"), by .toml path, or the default (None: CloudMatrix-Infer's). Cached by the
    name as given: the step model resolves it on every call."""
    return _load(_resolve(DEFAULT_BACKEND if name_or_path is None else name_or_path))


def kernel_curves(name_or_path: str | None) -> str | None:
    """The kernel-curve set a deployment's `backend` selects (None: the default profile's, the chip's default fit)."""
    return load_backend(name_or_path).kernels
