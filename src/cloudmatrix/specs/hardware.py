"""Hardware descriptions: chips and systems, read from TOML files in the catalog.

A *chip* (NPU/GPU package) has one or more *dies*; the die is the unit that
runs one attention-DP rank and one expert-parallel rank (an Ascend 910C has
two, a B200 presents itself as one device, so one). A *system* is nodes of
chips joined by a scale-up fabric (UB, NVLink) and a scale-out fabric (RDMA).

Catalog files write quantities with units ("64 GB", "1.6 TB/s", "224 Gb/s");
inside the code everything is bytes, bytes/s, FLOP/s, seconds and watts.
"""

from __future__ import annotations

import tomllib
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.specs.units import UnitError, parse_quantity
from cloudmatrix.user_input import read_text

PRECISIONS = ("fp32", "bf16", "fp16", "fp8", "int8", "fp4")
BYTES_PER_ELEMENT = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "fp4": 0.5}
# Serving stacks with their own kernel curves: a chip's [efficiency.backend.<name>] and a fabric's
# backend.<name> keys override the default fit (TensorRT-LLM's kernels on NVIDIA) for deployments on that stack.
BACKENDS = ("trtllm", "sglang", "vllm")


def check_backend(backend: str | None) -> None:
    if backend is not None and backend not in BACKENDS:
        raise CloudMatrixError(
            f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)} (or leave it out for the default fit)"
        )


def _with_backend_overrides(data: Any, table: str) -> Any:
    """Each `backend.<name>` sub-table is a partial override: the whole table it becomes is this table's own
    keys with the override's merged over them (sub-tables merged key by key), validated like the table itself."""
    if not isinstance(data, dict) or "backend" not in data:
        return data
    over = data["backend"]
    if not isinstance(over, dict):
        raise ValueError(f"[{table}.backend] must be a table of per-backend tables")
    unknown = sorted(set(over) - set(BACKENDS))
    if unknown:
        raise ValueError(f"unknown backend(s) {unknown} in [{table}.backend]; known: {list(BACKENDS)}")
    base = {k: v for k, v in data.items() if k != "backend"}
    return base | {"backend": {name: _merge(base, o) for name, o in over.items()}}


def _merge(base: dict, over: Any) -> dict:
    if not isinstance(over, dict):
        raise ValueError("a backend override must be a table")
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _quantity(dimension: str):
    def convert(v: Any) -> float:
        try:
            return parse_quantity(v, dimension)
        except UnitError as e:
            raise ValueError(str(e)) from None

    return BeforeValidator(convert)


Bytes = Annotated[float, _quantity("bytes"), Field(gt=0)]
BytesPerSecond = Annotated[float, _quantity("bytes/s"), Field(gt=0)]
FlopsPerSecond = Annotated[float, _quantity("flop/s"), Field(gt=0)]
Seconds = Annotated[float, _quantity("seconds"), Field(ge=0)]
Watts = Annotated[float, _quantity("watts"), Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]


class _Frozen(BaseModel):
    # allow_inf_nan=False: a catalog number is a measurement or a price, never inf or nan
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DieSpec(_Frozen):
    """What one die has. Compute peaks are dense (no sparsity)."""

    peak: dict[str, FlopsPerSecond]
    hbm_capacity: Bytes
    hbm_bandwidth: BytesPerSecond
    matrix_cores: int | None = Field(default=None, gt=0)
    vector_cores: int | None = Field(default=None, gt=0)
    die_to_die_bandwidth: BytesPerSecond | None = None

    @model_validator(mode="after")
    def _known_precisions(self) -> DieSpec:
        unknown = sorted(set(self.peak) - set(PRECISIONS))
        if unknown:
            raise ValueError(f"unknown precision(s) {unknown} in [die.peak]; known: {list(PRECISIONS)}")
        if "bf16" not in self.peak:
            raise ValueError("[die.peak] must give at least bf16")
        return self


class GemmEfficiency(_Frozen):
    """A GEMM's fraction of peak as it saturates with rows m, columns n and reduction depth k (perf/kernels.py):
    eff = peak * m / (m + half_rows) * n / (n + half_n) * k / (k + half_k)."""

    peak: Fraction  # large-shape fraction of the precision's peak
    half_rows: float = Field(default=0.0, ge=0)  # m (rows per expert for grouped GEMMs) at half of `peak`
    half_n: float = Field(default=0.0, ge=0)  # n at half of `peak`
    half_k: float = Field(default=0.0, ge=0)  # k at half of `peak`
    latency: Seconds | None = None  # fixed cost per launch; default: the chip's kernel_latency
    # grouped GEMMs fitted to whole MoE ops: HBM bytes per hidden element of every token the op takes in (its
    # routing, permutation and finalize pass over all of them, whichever experts they go to); 0: none
    token_bytes: float = Field(default=0.0, ge=0)


class Efficiency(_Frozen):
    """Fractions of peak that real kernels reach on this chip, each calibrated from kernel-level figures
    (docs/calibration.md lists every one with its source and fit)."""

    gemm: Fraction  # large GEMMs, fraction of peak compute (any precision without its own fit)
    # rows (tokens) and reduction depth at which a GEMM reaches half its large-shape efficiency
    gemm_half_rows: float = Field(default=0.0, ge=0)
    gemm_half_n: float = Field(default=0.0, ge=0)
    gemm_half_k: float = Field(default=0.0, ge=0)
    gemm_by_precision: dict[str, GemmEfficiency] = Field(default_factory=dict)  # per-precision fits
    grouped_gemm: GemmEfficiency | None = None  # MoE grouped GEMM (m = rows per expert); default: the GEMM fit
    grouped_gemm_by_precision: dict[str, GemmEfficiency] = Field(default_factory=dict)  # per-precision fits
    attention_compute: Fraction  # MLA decode core when compute-bound
    attention_memory: Fraction  # attention core when bound by reading the KV cache
    attention_prefill: Fraction  # MLA prefill core (compute-bound) on long prompts; default: attention_compute
    # prefill attention saturates with the keys each query sees: eff = attention_prefill * c / (c + this)
    attention_prefill_half_context: float = Field(default=0.0, ge=0)
    attention_prefill_latency: Seconds  # fixed cost per prefill attention kernel; default: attention_latency
    memory: Fraction  # streaming weights / activations from HBM
    vector: Fraction  # element-wise vector kernels (quantise, activation, permute), HBM fraction; default: memory
    # gather-reduce vector kernels (the MoE combine sum: each token's top-k expert rows read, weighted and summed),
    # HBM fraction; default: vector
    vector_reduce: Fraction
    kernel_latency: Seconds = 0.0  # fixed cost per GEMM / memory kernel: launch, prologue, tail wave
    attention_latency: Seconds  # fixed cost per attention-core kernel; default: kernel_latency
    # decode MLA kernel loads each KV tile, then computes on it (no overlap of the two): time = compute + memory
    attention_decode_serial: bool = False
    vector_latency: Seconds  # fixed cost per element-wise vector kernel; default: kernel_latency
    # The stack's second MoE kernel where it has one (TensorRT-LLM's TRTLLM-Gen "min-latency" MoE on Blackwell
    # NVFP4); the MoE op costs the faster of it and the grouped-GEMM curve, as the stack picks by size.
    grouped_gemm_low_latency_by_precision: dict[str, GemmEfficiency] = Field(default_factory=dict)
    # Decode under CUDA graphs runs the shared experts on an auxiliary stream beside the routed path
    # (perf/moe.py): the stack's own code, not a fit (docs/calibration.md cites it per stack).
    shared_experts_aux_stream: bool = False
    # The stack fuses each TP all-reduce with the residual add and the next RMSNorm (TensorRT-LLM's
    # AllReduceFusionOp.RESIDUAL_RMS_NORM): no separate norm kernel in a layer that ends in TP all-reduces.
    allreduce_norm_fusion: bool = False
    # Prefill MLA under attention TP runs sequence-parallel outside the attention core (SP -> TP -> SP,
    # CloudMatrix-Infer, paper §4.3.1); False: plain TP as TensorRT-LLM, SGLang and vLLM run it (every die of the
    # group holds all its tokens, heads split, the o_proj output all-reduced).
    prefill_attention_sp: bool = True
    # Fixed cost of the whole decode MLA block (all its kernels together), per attention-projection precision,
    # fitted to the stack's MLA module table; replaces the sum of the block's per-kernel latencies.
    mla_decode_block_latency: dict[str, Seconds] = Field(default_factory=dict)
    # The same for the prefill MLA block (the stack's context module table)
    mla_prefill_block_latency: dict[str, Seconds] = Field(default_factory=dict)
    # per serving stack: this table with [efficiency.backend.<name>]'s keys merged over it (System.for_backend)
    backend: dict[str, Efficiency] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_siblings(cls, data: Any) -> Any:
        data = _with_backend_overrides(data, "efficiency")
        if isinstance(data, dict):
            data = dict(data)
            if "attention_prefill" not in data and "attention_compute" in data:
                data["attention_prefill"] = data["attention_compute"]
            if "vector" not in data and "memory" in data:
                data["vector"] = data["memory"]
            if "vector_reduce" not in data and "vector" in data:
                data["vector_reduce"] = data["vector"]
            for key in ("attention_latency", "vector_latency"):
                data.setdefault(key, data.get("kernel_latency", 0.0))
            data.setdefault("attention_prefill_latency", data["attention_latency"])
        return data

    @model_validator(mode="after")
    def _known_gemm_precisions(self) -> Efficiency:
        for table in (
            "gemm_by_precision",
            "grouped_gemm_by_precision",
            "grouped_gemm_low_latency_by_precision",
            "mla_decode_block_latency",
            "mla_prefill_block_latency",
        ):
            unknown = sorted(set(getattr(self, table)) - set(PRECISIONS))
            if unknown:
                raise ValueError(f"unknown precision(s) {unknown} in [efficiency.{table}]; known: {PRECISIONS}")
        return self

    @cached_property
    def gemm_default(self) -> GemmEfficiency:
        return GemmEfficiency(
            peak=self.gemm, half_rows=self.gemm_half_rows, half_n=self.gemm_half_n, half_k=self.gemm_half_k
        )


class ChipSpec(_Frozen):
    name: str
    vendor: str
    description: str = ""
    dies: int = Field(gt=0)
    die: DieSpec
    efficiency: Efficiency
    tdp: Watts | None = None

    def peak(self, precision: str) -> float:
        """Dense peak FLOP/s of one die at `precision`."""
        if precision not in self.die.peak:
            have = ", ".join(sorted(self.die.peak))
            raise CloudMatrixError(
                f"{self.name} has no native {precision} compute (it has {have}); choose one of those"
            )
        return self.die.peak[precision]

    @property
    def hbm_capacity(self) -> float:
        return self.die.hbm_capacity * self.dies

    @property
    def hbm_bandwidth(self) -> float:
        return self.die.hbm_bandwidth * self.dies


class FabricSpec(_Frozen):
    """One network plane as the dies see it. Bandwidths are one-way per chip."""

    name: str
    bandwidth_per_chip: BytesPerSecond
    latency: Seconds  # one small message, one hop of the fabric (measured where available)
    domain_chips: int | None = Field(default=None, gt=0)  # chips reachable on this plane without leaving it
    # All-to-all kernels on this plane (see cloudmatrix.perf.comm for the formula they calibrate):
    dispatch_efficiency: Fraction = 1.0  # fraction of the link rate EP dispatch sustains
    combine_efficiency: Fraction = 1.0  # fraction of the link rate EP combine (and plain collectives) sustain
    sync_per_log2_rank: Seconds = 0.0  # completion signalling, per doubling of the group size
    # Prefill's throughput (DeepEP "normal") kernels where they differ from the low-latency ones above;
    # default: dispatch_efficiency / combine_efficiency.
    prefill_dispatch_efficiency: Fraction | None = None
    prefill_combine_efficiency: Fraction | None = None
    # The throughput kernels' fixed cost where they were measured on this plane (perf/comm.py: then a token is
    # sent once per destination die, and this replaces latency + sync); None: the low-latency kernels' formula.
    prefill_latency: Seconds | None = None
    # ... and their time per token copy sent (per-token work of kernels that run on a few SMs), per direction
    prefill_dispatch_per_copy: Seconds = 0.0
    prefill_combine_per_copy: Seconds = 0.0
    # Plain (NCCL-style) collectives on this plane, perf/kernels.py::collective; default: latency and the
    # combine efficiency.
    collective_latency: Seconds | None = None
    collective_sync_per_log2_rank: Seconds = 0.0  # NCCL's per-doubling step cost (used with collective_latency)
    collective_efficiency: Fraction | None = None
    in_switch_reduction: bool = False  # the switch reduces (NVLink SHARP): all-reduce sends each byte once
    # The serving stack's own (one-shot / two-shot) all-reduce kernel for small TP tensors, costed like a ring
    # all-reduce with these parameters; kernels.collective takes the faster of it and the NCCL one. None: NCCL only.
    custom_all_reduce_latency: Seconds | None = None
    custom_all_reduce_sync_per_log2_rank: Seconds = 0.0
    custom_all_reduce_efficiency: Fraction | None = None
    custom_all_reduce_max_ranks: int | None = Field(default=None, gt=1)  # larger groups use NCCL; None: any group
    # per serving stack: this plane with `backend.<name>.*` keys merged over it (System.for_backend)
    backend: dict[str, FabricSpec] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _backend_overrides(cls, data: Any) -> Any:
        return _with_backend_overrides(data, "fabric")

    @model_validator(mode="after")
    def _custom_all_reduce_complete(self) -> FabricSpec:
        if (self.custom_all_reduce_latency is None) != (self.custom_all_reduce_efficiency is None):
            raise ValueError("give both custom_all_reduce_latency and custom_all_reduce_efficiency, or neither")
        return self


Efficiency.model_rebuild()
FabricSpec.model_rebuild()


class CpuPoolSpec(_Frozen):
    """The CPU DRAM reachable from the dies: the caching pool (EMS) of CloudMatrix-Infer."""

    dram_per_node: Bytes
    read_bandwidth_per_die: BytesPerSecond  # NPU reads from CPU DRAM over this system's fabric
    fabric: str  # plane it is reached over, for reports


class SystemSpec(_Frozen):
    name: str
    description: str = ""
    chip: str  # a chip file name in the catalog, or a path
    nodes: int = Field(gt=0)
    chips_per_node: int = Field(gt=0)
    scale_up: FabricSpec
    scale_out: FabricSpec
    cpu_pool: CpuPoolSpec | None = None
    vpc_bandwidth_per_node: BytesPerSecond | None = None
    power: Watts | None = None  # whole system, at load
    power_per_node: Watts | None = None
    price_usd: float | None = Field(default=None, gt=0)
    price_per_node_usd: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_of_each(self) -> SystemSpec:
        if (self.power is None) == (self.power_per_node is None):
            raise ValueError("give exactly one of 'power' (whole system) or 'power_per_node'")
        if (self.price_usd is None) == (self.price_per_node_usd is None):
            raise ValueError("give exactly one of 'price_usd' (whole system) or 'price_per_node_usd'")
        if self.scale_up.domain_chips is None:
            raise ValueError("[scale_up] needs domain_chips: how many chips one scale-up domain joins")
        return self


class System:
    """A system with its chip resolved. Use `load_system`."""

    def __init__(self, spec: SystemSpec, chip: ChipSpec, source: str):
        self.spec = spec
        self.chip = chip
        self.source = source
        self._by_backend: dict[str, System] = {}

    def for_backend(self, backend: str | None) -> System:
        """This system as `backend`'s kernels run on it: the chip's and fabrics' per-backend overrides applied
        (resolved once per backend and kept); the system itself for None or a backend without overrides."""
        if backend is None:
            return self
        hit = self._by_backend.get(backend)
        if hit is None:
            check_backend(backend)
            eff = self.chip.efficiency.backend.get(backend)
            planes = {
                k: f.backend[backend]
                for k, f in (("scale_up", self.spec.scale_up), ("scale_out", self.spec.scale_out))
                if backend in f.backend
            }
            hit = self
            if eff is not None or planes:
                chip = self.chip.model_copy(update={"efficiency": eff}) if eff is not None else self.chip
                hit = System(self.spec.model_copy(update=planes), chip, self.source)
            self._by_backend[backend] = hit
        return hit

    def __repr__(self) -> str:
        return f"System({self.name!r}, {self.chips} x {self.chip.name})"

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def nodes(self) -> int:
        return self.spec.nodes

    @property
    def chips(self) -> int:
        return self.spec.nodes * self.spec.chips_per_node

    @property
    def dies(self) -> int:
        return self.chips * self.chip.dies

    @property
    def scale_up_domain_chips(self) -> int:
        return min(self.spec.scale_up.domain_chips or self.chips, self.chips)

    @property
    def power(self) -> float:
        s = self.spec
        return s.power if s.power is not None else s.power_per_node * s.nodes

    @property
    def price_usd(self) -> float:
        s = self.spec
        return s.price_usd if s.price_usd is not None else s.price_per_node_usd * s.nodes

    def with_nodes(self, nodes: int) -> System:
        """The same system with another node count (HGX clusters are sold by the node)."""
        if nodes <= 0:
            raise CloudMatrixError(f"--nodes must be a positive integer, got {nodes}")
        if self.spec.power is not None or self.spec.price_usd is not None:
            raise CloudMatrixError(
                f"{self.name} is priced and powered as a whole system; its node count is fixed at {self.nodes}"
            )
        return System(self.spec.model_copy(update={"nodes": nodes}), self.chip, self.source)


# ---------------------------------------------------------------- loading


def _catalog_dir() -> Path:
    return Path(str(resources.files("cloudmatrix.specs") / "catalog" / "hardware"))


def catalog_names(kind: str) -> list[str]:
    """Names of the shipped chip ("chip") or system ("system") files."""
    out = []
    for p in sorted(_catalog_dir().glob("*.toml")):
        data = _read_toml(p)
        if ("chip" in data) == (kind == "system"):
            out.append(p.stem)
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(read_text(path, "hardware file"))
    except tomllib.TOMLDecodeError as e:
        raise CloudMatrixError(f"{path}: not valid TOML ({e}); fix the syntax") from None


def _validation_message(path: Path, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        field = ".".join(str(x) for x in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing":
            msg = "missing; add it"
        elif e["type"] == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling"
        parts.append(f"{field}: {msg}")
    return f"{path}: " + "; ".join(parts)


def _resolve(name_or_path: str | Path, what: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.exists():
            raise CloudMatrixError(f"{what} file {p} does not exist")
        return p
    shipped = _catalog_dir() / f"{name_or_path}.toml"
    if shipped.exists():
        return shipped
    known = ", ".join(catalog_names(what))
    raise CloudMatrixError(f"unknown {what} {str(name_or_path)!r}; known: {known} (or give a path to a .toml file)")


@cache
def _load_chip_cached(path: Path) -> ChipSpec:
    data = _read_toml(path)
    if "chip" in data and "die" not in data:
        raise CloudMatrixError(f"{path}: this is a system file, not a chip file; pass it where a system is expected")
    try:
        return ChipSpec.model_validate(data)
    except ValidationError as e:
        raise CloudMatrixError(_validation_message(path, e)) from None


def load_chip(name_or_path: str | Path) -> ChipSpec:
    """A chip from the catalog by name (e.g. "ascend-910c") or from a TOML file path."""
    return _load_chip_cached(_resolve(name_or_path, "chip").resolve())


@cache
def _load_system_cached(path: Path) -> System:
    data = _read_toml(path)
    if "die" in data and "chip" not in data:
        raise CloudMatrixError(f"{path}: this is a chip file, not a system file; pass it where a chip is expected")
    try:
        spec = SystemSpec.model_validate(data)
    except ValidationError as e:
        raise CloudMatrixError(_validation_message(path, e)) from None
    chip_ref = spec.chip
    chip_path = Path(chip_ref)
    if not chip_path.is_absolute() and chip_ref.endswith(".toml"):
        chip_path = path.parent / chip_ref  # relative to the system file
        chip_ref = str(chip_path)
    try:
        chip = load_chip(chip_ref)
    except CloudMatrixError as e:
        raise CloudMatrixError(f"{path}: chip = {spec.chip!r} cannot be loaded: {e}") from None
    return System(spec, chip, str(path))


def load_system(name_or_path: str | Path) -> System:
    """A system from the catalog by name (e.g. "cloudmatrix384") or from a TOML file path."""
    return _load_system_cached(_resolve(name_or_path, "system").resolve())
