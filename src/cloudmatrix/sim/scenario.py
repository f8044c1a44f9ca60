"""Scenario files: system, model, deployment and workload of one simulation, in TOML.

Every section forbids unknown keys, and `Scenario.check()` rejects impossible
deployments (more dies than the system has, EP that does not divide the experts,
a batch that does not fit) before anything is simulated.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf.deployment import Deployment, default_expert_layout, precisions_for
from cloudmatrix.sim.workload import WorkloadSpec, describe_errors
from cloudmatrix.specs.hardware import System, load_system
from cloudmatrix.specs.model import ModelSpec, load_model


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoolSpec(_Section):
    """A pool of identical instances."""

    instances: int = Field(ge=1)
    dies: int = Field(ge=1)  # per instance
    ep: int | None = Field(default=None, ge=1)  # default: all dies of the instance
    shared_expert_dies: int | None = Field(default=None, ge=0)  # default: the CloudMatrix-Infer layout rule
    redundant_experts: int | None = Field(default=None, ge=0)
    attn_tp: int = Field(default=1, ge=1)
    microbatches: Literal[1, 2] = 2
    batch_per_die: int | None = Field(default=None, ge=1)  # decode / colocated: max sequences per die
    tokens_per_die: int | None = Field(default=None, ge=1)  # prefill: token budget per die per batch
    policy: Literal["fcfs", "shortest"] = "fcfs"  # prefill queue order (shortest remaining prompt first)


class MtpSpec(_Section):
    depth: int = Field(default=0, ge=0)
    acceptance: float = Field(default=0.0, ge=0, le=1)


class PrecisionSpec(_Section):
    weights: Literal["int8", "fp8", "fp4", "bf16"] = "int8"
    kv_cache: Literal["bf16", "int8", "fp8"] = "bf16"


class ExpertsSpec(_Section):
    popularity: Literal["uniform", "zipf", "file"] = "uniform"
    zipf_s: float = Field(default=1.0, ge=0)
    path: str | None = None
    placement: Literal["eplb", "none", "perfect"] = "eplb"
    seed: int = 0


class CachingSpec(_Section):
    enabled: bool = False
    capacity_gb: float | None = Field(default=None, gt=0)  # default: the system's CPU DRAM pool
    block_size: int = Field(default=128, ge=1)  # tokens per EMS block (paper: 128-512)
    # plane the prefill dies read cached KV over: the scale-up fabric to the CPU pool (UB on
    # CloudMatrix384), or the VPC/front-end network, for the comparison the paper makes
    plane: Literal["scale-up", "vpc"] = "scale-up"


class SloSpec(_Section):
    ttft: float | None = Field(default=None, gt=0)  # seconds
    tpot: float | None = Field(default=None, gt=0)


class Scenario(_Section):
    name: str = "scenario"
    description: str = ""
    system: str
    nodes: int | None = Field(default=None, ge=1)
    model: str
    mode: Literal["disaggregated", "colocated"] = "disaggregated"
    prefill: PoolSpec | None = None
    decode: PoolSpec | None = None
    colocated: PoolSpec | None = None
    mtp: MtpSpec = MtpSpec()
    precision: PrecisionSpec = PrecisionSpec()
    experts: ExpertsSpec = ExpertsSpec()
    caching: CachingSpec = CachingSpec()
    slo: SloSpec = SloSpec()
    workload: WorkloadSpec
    duration: float | None = Field(default=None, gt=0)  # simulated seconds; default: until the workload ends
    warmup: float = Field(default=0.0, ge=0)  # seconds excluded from throughput and latency figures
    seed: int = 0
    kv_block_size: int = Field(default=128, ge=1)  # paged KV block on the decode dies
    base_dir: str = Field(default=".", exclude=True)

    @model_validator(mode="after")
    def _pools_match_mode(self) -> Scenario:
        if self.mode == "disaggregated":
            if self.prefill is None or self.decode is None:
                raise ValueError("mode 'disaggregated' needs [prefill] and [decode] sections")
            if self.colocated is not None:
                raise ValueError("[colocated] does not apply to mode 'disaggregated'; remove it")
            if self.decode.batch_per_die is None:
                raise ValueError("[decode] needs batch_per_die (max sequences per die)")
            if self.prefill.tokens_per_die is None:
                raise ValueError("[prefill] needs tokens_per_die (token budget per die per batch)")
        else:
            if self.colocated is None:
                raise ValueError("mode 'colocated' needs a [colocated] section")
            if self.prefill is not None or self.decode is not None:
                raise ValueError("[prefill]/[decode] do not apply to mode 'colocated'; use [colocated]")
            if self.colocated.batch_per_die is None or self.colocated.tokens_per_die is None:
                raise ValueError("[colocated] needs batch_per_die and tokens_per_die (chunked-prefill budget)")
        return self

    # ------------------------------------------------------------ resolution
    def resolve_system(self) -> System:
        s = load_system(self._path(self.system))
        return s.with_nodes(self.nodes) if self.nodes is not None else s

    def resolve_model(self) -> ModelSpec:
        return load_model(self._path(self.model))

    def _path(self, ref: str) -> str:
        p = Path(self.base_dir) / ref
        return str(p) if (ref.endswith((".toml", ".json")) or "/" in ref) and p.exists() else ref

    def deployment(self, pool: PoolSpec, model: ModelSpec) -> Deployment:
        ep = pool.ep or pool.dies
        auto_shared, auto_redundant = default_expert_layout(model, ep)
        return Deployment(
            dies=pool.dies,
            ep=ep,
            shared_expert_dies=auto_shared if pool.shared_expert_dies is None else pool.shared_expert_dies,
            redundant_experts=auto_redundant if pool.redundant_experts is None else pool.redundant_experts,
            attn_tp=pool.attn_tp,
            microbatches=pool.microbatches,
            mtp_depth=self.mtp.depth,
            mtp_acceptance=self.mtp.acceptance,
            precision=precisions_for(self.precision.weights, self.precision.kv_cache),
        )

    def pools(self) -> dict[str, PoolSpec]:
        if self.mode == "disaggregated":
            return {"prefill": self.prefill, "decode": self.decode}  # type: ignore[dict-item]
        return {"colocated": self.colocated}  # type: ignore[dict-item]

    def check(self) -> tuple[System, ModelSpec]:
        """Resolve and validate everything a run needs; raise CloudMatrixError with the reason."""
        system, model = self.resolve_system(), self.resolve_model()
        total = sum(p.instances * p.dies for p in self.pools().values())
        if total > system.dies:
            raise CloudMatrixError(
                f"scenario {self.name!r} uses {total} dies ("
                + " + ".join(f"{n} {p.instances} x {p.dies}" for n, p in self.pools().items())
                + f") but {system.name} has {system.dies}; shrink the pools or pick a larger system"
            )
        for name, pool in self.pools().items():
            try:
                self.deployment(pool, model).validate(model, system)
            except CloudMatrixError as e:
                raise CloudMatrixError(f"[{name}]: {e}") from None
        return system, model


def load_scenario(path_or_name: str | Path, overrides: dict[str, Any] | None = None) -> Scenario:
    """A scenario from a TOML file, or a shipped one by name ("default", "paper-decode", ...)."""
    p = Path(path_or_name)
    if not p.exists():
        shipped = Path(str(resources.files("cloudmatrix.sim") / "scenarios" / f"{path_or_name}.toml"))
        if not shipped.exists():
            raise CloudMatrixError(
                f"no scenario file {str(path_or_name)!r}; give a TOML path or one of: {', '.join(scenario_names())}"
            )
        p = shipped
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise CloudMatrixError(f"{p}: not valid TOML ({e})") from None
    for key, value in (overrides or {}).items():
        _set(data, key, value)
    data["base_dir"] = str(p.parent)
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise CloudMatrixError(f"{p}: {describe_errors(e)}") from None


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for k in parents:
        data = data.setdefault(k, {})
    data[last] = value


def scenario_names() -> list[str]:
    d = Path(str(resources.files("cloudmatrix.sim") / "scenarios"))
    return sorted(p.stem for p in d.glob("*.toml"))
