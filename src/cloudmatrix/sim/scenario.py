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
from cloudmatrix.perf.deployment import Deployment, build_deployment
from cloudmatrix.sim.workload import WorkloadSpec, describe_errors
from cloudmatrix.specs.backend import load_backend
from cloudmatrix.specs.hardware import System, load_system
from cloudmatrix.specs.model import ModelSpec, load_model


class _Section(BaseModel):
    # strict: `instances = true` or `"6"` is an error, not 1 or 6; no float may be inf or NaN
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class PoolSpec(_Section):
    """A pool of identical instances."""

    instances: int = Field(ge=1)
    dies: int = Field(ge=1)  # per instance
    ep: int | None = Field(default=None, ge=1)  # default: all dies of the instance
    shared_expert_dies: int | None = Field(default=None, ge=0)  # default: the CloudMatrix-Infer layout rule
    redundant_experts: int | None = Field(default=None, ge=0)
    attn_tp: int = Field(default=1, ge=1)  # attention heads split over this many dies
    moe_tp: int = Field(default=1, ge=1)  # each expert split over this many dies (EP x moe_tp divides dies)
    microbatches: Literal[1, 2] = 2
    batch_per_die: int | None = Field(default=None, ge=1)  # decode / colocated: max sequences per die
    # decode / colocated: max sequences per attention-DP rank where a stack sets it (its max batch size) and it
    # is not batch_per_die x attn_tp; batch_per_die still sizes memory. Default: batch_per_die x attn_tp.
    batch_per_rank: int | None = Field(default=None, ge=1)
    tokens_per_die: int | None = Field(default=None, ge=1)  # prefill: token budget per die per batch
    policy: Literal["fcfs", "shortest"] = "fcfs"  # prefill queue order (shortest remaining prompt first)
    # serving-stack profile (specs/backend.py): a shipped name ("sglang") or a .toml path (relative to the
    # scenario file); its kernel curves, host cost, schedule and hand-off. Default: the twin's (DEFAULT_BACKEND)
    backend: str | None = None
    # colocated step scheduling; None: the backend's default (sim/scheduling.py says what each means)
    prefill_mode: Literal["mixed", "separate"] | None = None
    chunked_prefill: bool | None = None
    overlap: bool | None = None
    recv_interval: int | None = Field(default=None, ge=1)
    balance_timeout: int | None = Field(default=None, ge=0)
    batch_wait_iters: int | None = Field(default=None, ge=0)
    batch_wait_ratio: float | None = Field(default=None, ge=0, le=1)


class MtpSpec(_Section):
    depth: int = Field(default=0, ge=0, le=16)  # draft tokens per step
    acceptance: float = Field(default=0.0, ge=0, le=1)


class PrecisionSpec(_Section):
    weights: Literal["int8", "fp8", "fp4", "bf16"] = "int8"
    kv_cache: Literal["bf16", "int8", "fp8"] = "bf16"


class ExpertsSpec(_Section):
    popularity: Literal["uniform", "zipf", "file"] = "uniform"
    zipf_s: float = Field(default=1.0, ge=0)
    # popularity "file": the served traffic's expert popularity (CSV/JSON weights, or SGLang's per-layer
    # `logical_count` dump: serving/eplb.py read_popularity); relative paths against the scenario's folder
    path: str | None = None
    placement: Literal["eplb", "none", "perfect"] = "eplb"
    # statistics the placement was computed from, when not the served traffic's own (a stale placement);
    # same formats as `path`
    placement_path: str | None = None
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _files_named(self) -> ExpertsSpec:
        if self.popularity == "file" and self.path is None:
            raise ValueError('popularity = "file" needs path = "<CSV or JSON of expert weights>"')
        if self.popularity != "file" and self.path is not None:
            raise ValueError(
                f'path is read only with popularity = "file" (popularity is {self.popularity!r}): '
                'set popularity = "file" or remove path'
            )
        return self


class CachingSpec(_Section):
    enabled: bool = False
    capacity_gb: float | None = Field(default=None, gt=0, le=1e9)  # default: the system's CPU DRAM pool
    block_size: int = Field(default=128, ge=1)  # tokens per EMS block (paper: 128-512)
    # plane the prefill dies read cached KV over: the scale-up fabric to the CPU pool (UB on
    # CloudMatrix384), or the VPC/front-end network, for the comparison the paper makes
    plane: Literal["scale-up", "vpc"] = "scale-up"


class FrontEndSpec(_Section):
    """What the serving front end adds to a request's TTFT, per request [s].

    Defaults measured on this project's machine by benchmarks/frontend_costs.py (docs/simulation.md):
    Hugging Face `tokenizers` byte-level BPE encoding, FastAPI + uvicorn request handling, one-token
    detokenisation. Set all three to 0 for the server-side TTFT alone.
    """

    tokenize_s_per_token: float = Field(default=3.1e-6, ge=0, le=1e-3)
    request_s: float = Field(default=1.1e-3, ge=0, le=10)  # HTTP + JSON handling and scheduling hand-off
    detokenize_s: float = Field(default=0.7e-6, ge=0, le=1)  # per streamed token
    # independent routers (each its own round-robin pointer) that a load balancer spreads requests over: srt-slurm
    # starts up to 10 Dynamo frontends behind nginx on a multi-node job unless a recipe sets
    # enable_multiple_frontends false (serving/router.py says what the twin does with them; a load-watching policy
    # picks the same whatever their number)
    routers: int = Field(default=1, ge=1)

    def ingress(self, input_len: int) -> float:
        """From the client's send to the prompt's arrival in a prefill queue."""
        return self.request_s + self.tokenize_s_per_token * input_len

    @property
    def egress(self) -> float:
        """From a token's existence on the server to the client holding it."""
        return self.detokenize_s


class SloSpec(_Section):
    ttft: float | None = Field(default=None, gt=0)  # seconds
    tpot: float | None = Field(default=None, gt=0)
    target: float = Field(default=0.9, gt=0, le=1)  # share of requests that must meet both (goodput)


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
    frontend: FrontEndSpec = FrontEndSpec()
    slo: SloSpec = SloSpec()
    workload: WorkloadSpec
    duration: float | None = Field(default=None, gt=0)  # simulated seconds; default: until the workload ends
    warmup: float = Field(default=0.0, ge=0)  # seconds excluded from throughput and latency figures
    seed: int = Field(default=0, ge=0)
    kv_block_size: int = Field(default=128, ge=1, le=1 << 24)  # paged KV block on the decode dies
    base_dir: str = Field(default=".", exclude=True)

    @model_validator(mode="after")
    def _pools_match_mode(self) -> Scenario:
        if self.duration is not None and self.warmup >= self.duration:
            raise ValueError(
                f"warmup ({self.warmup:g} s) must be shorter than duration ({self.duration:g} s); "
                "set --set warmup=SECONDS below the duration"
            )
        # keys a pool accepts but that do nothing in that role are errors, not silently ignored
        colocated_only = (
            "prefill_mode", "chunked_prefill", "overlap", "recv_interval", "balance_timeout", "batch_wait_iters",
            "batch_wait_ratio",
        )  # fmt: skip
        # recv_interval is the decode intake's polling (sim/disaggregated.py, checked in _recv_interval_polls)
        decode_unused = tuple(k for k in colocated_only if k != "recv_interval")
        unused = {
            "prefill": ("batch_per_die", "batch_per_rank", *colocated_only),
            "decode": ("tokens_per_die", "policy", *decode_unused),
        }
        for pool_name, keys in unused.items() if self.mode == "disaggregated" else ():
            pool = getattr(self, pool_name)
            for key in keys:
                if pool is not None and key in pool.model_fields_set:
                    if (pool_name, key) == ("prefill", "recv_interval"):
                        raise ValueError(
                            "[prefill] recv_interval does nothing in a prefill pool: a prefill forward weighs 1,000 in "
                            "SGLang's recv skipper, so a prefill server polls after every step whatever the interval; "
                            "remove it (set it on [decode])"
                        )
                    raise ValueError(f"[{pool_name}] {key} does nothing in a {pool_name} pool; remove it")
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

    @model_validator(mode="after")
    def _known_backends(self) -> Scenario:
        """Each pool's backend is a loadable profile; a relative .toml path is resolved against the scenario's
        directory and kept resolved, so the step model, the scheduler and the hand-off read one file."""
        for name, pool in self.pools().items():
            if pool is None or pool.backend is None:
                continue
            ref = self._path(pool.backend)
            try:
                load_backend(ref)
            except CloudMatrixError as e:
                raise ValueError(f"[{name}] backend: {e}") from None
            if ref != pool.backend:
                object.__setattr__(self, name, pool.model_copy(update={"backend": str(Path(ref).resolve())}))
        return self

    @model_validator(mode="after")
    def _recv_interval_polls(self) -> Scenario:
        """A disaggregated decode pool's recv_interval is the interval of its scheduler's polling for new requests,
        which only a stack whose prefill waits for the decode intake has (its [handoff] prefill_after_decode_intake)."""
        d = self.decode
        if self.mode != "disaggregated" or d is None or d.recv_interval is None:
            return self
        profile = load_backend(d.backend)
        if not profile.handoff.prefill_after_decode_intake:
            raise ValueError(
                f"[decode] recv_interval needs a backend whose decode scheduler polls for new requests (sglang); "
                f"backend {profile.name!r} takes them in without polling: remove recv_interval or set backend"
            )
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
        return build_deployment(
            model,
            dies=pool.dies,
            ep=pool.ep,
            shared_expert_dies=pool.shared_expert_dies,
            redundant_experts=pool.redundant_experts,
            attn_tp=pool.attn_tp,
            moe_tp=pool.moe_tp,
            microbatches=pool.microbatches,
            mtp_depth=self.mtp.depth,
            mtp_acceptance=self.mtp.acceptance,
            precision=self.precision.weights,
            kv_cache=self.precision.kv_cache,
            backend=pool.backend,
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
    if p.is_dir():
        raise CloudMatrixError(f"{p} is a directory; give a scenario TOML file or a shipped scenario name")
    try:
        with p.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise CloudMatrixError(f"{p}: not valid TOML ({e})") from None
    except UnicodeDecodeError:
        raise CloudMatrixError(f"{p} is not UTF-8 text; save the scenario as UTF-8") from None
    for key, value in (overrides or {}).items():
        _set(data, key, value)
    data["base_dir"] = str(p.parent)
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise CloudMatrixError(f"{p}: {describe_errors(e)}") from None


def _set(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for i, k in enumerate(parents):
        data = data.setdefault(k, {})
        if not isinstance(data, dict):
            where = ".".join(parents[: i + 1])
            raise CloudMatrixError(f"--set {dotted}: {where} is a value ({data!r}), not a section; set {where}=VALUE")
    data[last] = value


def scenario_names() -> list[str]:
    d = Path(str(resources.files("cloudmatrix.sim") / "scenarios"))
    return sorted(p.stem for p in d.glob("*.toml"))
