"""A deployment of one model instance: how its dies split the work, at what precision, and the one
builder every caller uses (`build_deployment`).

One *instance* is a group of dies serving one model replica within a pool. The
fields are the knobs of CloudMatrix-Infer (and of DeepSeek's, SGLang's and TRT-LLM's
layouts on GPUs): attention TP (heads split; attention DP = dies / attn_tp), MoE
expert-parallel and tensor-parallel degrees, where shared experts live, redundant
experts, microbatches, MTP and one precision per op class.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.specs.backend import load_backend
from cloudmatrix.specs.hardware import BYTES_PER_ELEMENT, System
from cloudmatrix.specs.model import ModelSpec

if TYPE_CHECKING:
    from cloudmatrix.perf.expert_load import ExpertLoad, LayeredExpertLoad

# (id(model), id(system), deployment) of combinations that passed validation -> (model, system)
_VALIDATED: dict[tuple[int, int, object], tuple[object, object]] = {}

# The matmul op classes a checkpoint quantises separately.
MATMUL_CLASSES = ("attn_proj", "experts", "dense_ffn", "head")


@dataclass(frozen=True)
class Precisions:
    """Precision per op class, as real checkpoints store them (not one weight precision for every matmul).

    8-bit or narrower matmuls run W8A8/W4A4-style: the activations are quantised too, so the chip's
    peak at that precision applies."""

    attn_proj: str = "int8"  # attention projections (MLA prolog/epilog, QKV/O, MTP eh_proj)
    experts: str = "int8"  # routed and shared experts
    dense_ffn: str = "int8"  # dense FFN layers (DeepSeek's first three; every layer of a dense model)
    head: str = "bf16"  # embeddings, LM head and router
    attention: str = "bf16"  # attention core (scores and values)
    kv_cache: str = "bf16"
    dispatch: str = "int8"  # token hidden states sent to experts (+ scales when quantised)
    combine: str = "bf16"  # expert outputs sent back

    def label(self) -> str:
        return (
            f"attention proj {self.attn_proj}, experts {self.experts}, dense FFN {self.dense_ffn}, "
            f"attention {self.attention}, KV {self.kv_cache}, dispatch {self.dispatch}"
        )


@dataclass(frozen=True)
class Deployment:
    dies: int  # dies in the instance
    ep: int | None = None  # expert-parallel degree in dies (default: dies / moe_tp)
    shared_expert_dies: int = 0  # dies holding only shared-expert replicas (0: shared experts on every die)
    redundant_experts: int = 0  # extra routed-expert replicas for load balance (EPLB)
    attn_tp: int = 1  # attention heads split over this many dies (prefill MLA: SP -> TP -> SP)
    moe_tp: int = 1  # each expert's intermediate dimension split over this many dies
    microbatches: int = 1  # 1 or 2 (two-stream overlap)
    attention_stream_share: float = 2 / 3  # decode, two microbatches: compute share of the attention stream
    mtp_depth: int = 0
    mtp_acceptance: float = 0.0  # probability a draft token is accepted
    # expert load, busiest die / mean die, used when `expert_load` is None (1.0 = perfect balance)
    imbalance: float = 1.0
    precision: Precisions = field(default_factory=Precisions)
    hbm_reserve: float = 0.05  # fraction of HBM kept free for the runtime and fragmentation (assumption)
    # the placement's load statistics: when set, the step takes imbalance and distinct experts per die
    # at each microbatch's own tokens from it (and ignores `imbalance`)
    expert_load: ExpertLoad | LayeredExpertLoad | None = field(default=None, compare=False, repr=False)
    # the serving stack (specs/backend.py: its kernel curves, graphed/eager phases, host cost per op):
    # "sglang", "vllm", "trtllm", "engine", "cloudmatrix-infer" or a profile's .toml path; None: the twin's default
    backend: str | None = None

    @property
    def ep_degree(self) -> int:
        return self.ep if self.ep is not None else max(1, self.dies // self.moe_tp)

    @property
    def routed_dies(self) -> int:
        return self.ep_degree - self.shared_expert_dies

    @property
    def moe_group_dies(self) -> int:
        """Dies that share one copy of the experts: EP x MoE TP."""
        return self.ep_degree * self.moe_tp

    @property
    def tp_groups_shared(self) -> bool:
        """The attention TP group is the MoE group (attn_tp == EP x MoE TP > 1, no dedicated shared-expert dies):
        after the attention's all-reduce every die holds the group's tokens, so MoE needs no gather and no
        dispatch (each die runs its experts' share on the tokens it holds) and one all-reduce sums the partial
        outputs: how TensorRT-LLM and SGLang run TP attention (no attention DP) with TP or EP MoE."""
        return self.attn_tp > 1 and self.moe_group_dies == self.attn_tp and not self.shared_expert_dies

    def tokens_per_step(self) -> float:
        """Output tokens a sequence gains per decode step: 1 + expected accepted drafts.

        With depth d and per-draft acceptance a, drafts are accepted in order until the first
        rejection: E = 1 + a + a^2 + ... + a^d (d=1, a=0.7 gives the paper's 1.7).
        """
        return sum(self.mtp_acceptance**i for i in range(self.mtp_depth + 1))

    def with_(self, **changes) -> Deployment:
        return replace(self, **changes)

    def slots_per_routed_die(self, model: ModelSpec) -> int:
        return (model.routed_experts + self.redundant_experts) // self.routed_dies

    def validate(self, model: ModelSpec, system: System) -> None:
        """Raise CloudMatrixError naming the first impossible or unmodelled knob and how to fix it.
        A combination that passed once is remembered (the step model validates on every call)."""
        key = (id(model), id(system), self)
        if key in _VALIDATED:
            return
        self._check(model, system)
        if len(_VALIDATED) > 4096:
            _VALIDATED.clear()
        _VALIDATED[key] = (model, system)  # holding them keeps their ids from being reused

    def _check(self, model: ModelSpec, system: System) -> None:
        if self.dies <= 0:
            raise CloudMatrixError(f"an instance needs at least one die, got dies={self.dies}")
        if self.dies > system.dies:
            raise CloudMatrixError(
                f"the instance needs {self.dies} dies but {system.name} has {system.dies} "
                f"({system.chips} chips x {system.chip.dies} dies); use fewer dies or a larger system"
            )
        if self.microbatches not in (1, 2):
            raise CloudMatrixError(f"microbatches must be 1 or 2, got {self.microbatches}")
        if not 0 < self.attention_stream_share < 1:
            raise CloudMatrixError(f"attention_stream_share must be between 0 and 1, got {self.attention_stream_share}")
        if self.mtp_depth < 0 or not 0 <= self.mtp_acceptance <= 1:
            raise CloudMatrixError(
                f"MTP depth must be >= 0 and acceptance in [0, 1]; got depth {self.mtp_depth}, "
                f"acceptance {self.mtp_acceptance}"
            )
        if self.mtp_depth > 0 and model.mtp_layers == 0:
            raise CloudMatrixError(f"{model.name} has no MTP module (num_nextn_predict_layers = 0); set mtp depth 0")
        if self.imbalance < 1:
            raise CloudMatrixError(f"imbalance is busiest/mean expert load and cannot be below 1, got {self.imbalance}")
        if not 0 <= self.hbm_reserve < 1:
            raise CloudMatrixError(f"hbm_reserve must be in [0, 1), got {self.hbm_reserve}")
        self._validate_attention(model)
        self._validate_precisions(system)
        if model.is_moe:
            self._validate_moe(model)
        elif self.moe_tp > 1 or (self.ep is not None and self.ep > 1):
            raise CloudMatrixError(f"{model.name} is a dense model: set ep and moe_tp to 1 (use attn_tp for TP)")

    def _validate_attention(self, model: ModelSpec) -> None:
        if self.attn_tp < 1 or self.dies % self.attn_tp:
            raise CloudMatrixError(f"attention TP degree {self.attn_tp} must divide the instance's {self.dies} dies")
        if model.heads % self.attn_tp:
            raise CloudMatrixError(f"attention TP degree {self.attn_tp} must divide {model.name}'s {model.heads} heads")
        if model.attention == "gqa" and self.attn_tp > model.kv_heads and self.attn_tp % model.kv_heads:
            raise CloudMatrixError(
                f"attention TP degree {self.attn_tp} above {model.name}'s {model.kv_heads} KV heads must be a "
                f"multiple of them (each KV head replicated on a whole number of dies)"
            )

    def _validate_precisions(self, system: System) -> None:
        for name in (*MATMUL_CLASSES, "attention", "kv_cache", "dispatch", "combine"):
            p = getattr(self.precision, name)
            if p not in BYTES_PER_ELEMENT:
                raise CloudMatrixError(f"unknown {name} precision {p!r}; use one of {', '.join(BYTES_PER_ELEMENT)}")
        for name in (*MATMUL_CLASSES, "attention"):
            system.chip.peak(getattr(self.precision, name))  # raises if the chip lacks it

    def _validate_moe(self, model: ModelSpec) -> None:
        ep, tp = self.ep_degree, self.moe_tp
        if tp < 1 or model.moe_intermediate % tp:
            raise CloudMatrixError(
                f"MoE TP degree {tp} must divide {model.name}'s expert width {model.moe_intermediate}"
            )
        if ep <= 0 or self.dies % (ep * tp):
            raise CloudMatrixError(
                f"EP {ep} x MoE TP {tp} = {ep * tp} dies must divide the instance's {self.dies} dies"
            )
        if not 0 <= self.shared_expert_dies < ep:
            raise CloudMatrixError(
                f"shared_expert_dies={self.shared_expert_dies} must be in [0, EP={ep}); routed experts need dies too"
            )
        if self.shared_expert_dies and model.shared_experts == 0:
            raise CloudMatrixError(f"{model.name} has no shared experts; set shared_expert_dies = 0")
        if self.shared_expert_dies and tp > 1:
            raise CloudMatrixError(
                "dedicated shared-expert dies with MoE TP > 1 are not modelled; set shared_expert_dies = 0 "
                "(shared experts on every die) or moe_tp = 1"
            )
        if self.redundant_experts < 0:
            raise CloudMatrixError(f"redundant_experts must be >= 0, got {self.redundant_experts}")
        slots = model.routed_experts + self.redundant_experts
        if slots % self.routed_dies:
            raise CloudMatrixError(
                f"{model.routed_experts} routed + {self.redundant_experts} redundant experts = {slots} slots do not "
                f"divide evenly over {self.routed_dies} expert dies (EP {ep} - {self.shared_expert_dies} shared-expert "
                f"dies); pick redundant_experts so that the sum is a multiple of {self.routed_dies}"
            )


def precisions_for(name: str, kv_cache: str = "bf16", attention: str | None = None) -> Precisions:
    """The precision set of a checkpoint family, by its headline name:

    - "int8": CloudMatrix-Infer W8A8 (paper §4.4): INT8 attention and FFN/expert matmuls, INT8 dispatch.
    - "fp8": DeepSeek's own FP8 checkpoint (block-scaled FP8 for every linear layer), FP8 dispatch (DeepEP).
    - "fp4": NVIDIA's NVFP4 DeepSeek-R1 (nvidia/DeepSeek-R1-FP4, TensorRT Model Optimizer): the MLPs,
      routed/shared experts and dense FFN, are FP4; `self_attn*` and `lm_head` are excluded from FP4
      (its hf_quant_config.json), and serving stacks run attention projections in FP8 (LMSYS GB200
      NVL72 blog, "FP8 attention + NVFP4 MoE").
    - "bf16"/"fp16": unquantised.
    Embeddings, LM head and router stay BF16 in all of them."""
    table = {
        "int8": ("int8", "int8", "int8", "int8"),
        "fp8": ("fp8", "fp8", "fp8", "fp8"),
        "fp4": ("fp8", "fp4", "fp4", "fp8"),
        "bf16": ("bf16", "bf16", "bf16", "bf16"),
        "fp16": ("fp16", "fp16", "fp16", "fp16"),
    }
    if name not in table:
        raise CloudMatrixError(f"unknown precision {name!r}; use one of {', '.join(table)}")
    attn_proj, experts, dense_ffn, dispatch = table[name]
    return Precisions(
        attn_proj=attn_proj,
        experts=experts,
        dense_ffn=dense_ffn,
        dispatch=dispatch,
        kv_cache=kv_cache,
        attention=attention or "bf16",
    )


def default_expert_layout(model: ModelSpec, ep: int) -> tuple[int, int]:
    """(shared_expert_dies, redundant_experts) following CloudMatrix-Infer's layouts.

    EP at least the number of routed experts (decode, EP320): one expert per die; the spare dies
    are split between shared-expert replicas and redundant routed experts (320 = 256 + 32 + 32,
    paper §4.2). Smaller EP (prefill, EP32): shared expert on every die plus one redundant routed
    expert per die (paper §4.3: 8 routed + 1 redundant + 1 shared per die)."""
    if not model.is_moe or ep <= 1:
        return 0, 0
    e = model.routed_experts
    if ep >= e:
        spare = ep - e
        shared = spare // 2 if model.shared_experts else 0
        return shared, spare - shared
    redundant = ep if (e + ep) % ep == 0 else (-e) % ep
    return 0, redundant


def build_deployment(
    model: ModelSpec,
    *,
    dies: int,
    ep: int | None = None,
    shared_expert_dies: int | None = None,
    redundant_experts: int | None = None,
    attn_tp: int = 1,
    moe_tp: int = 1,
    microbatches: int = 1,
    mtp_depth: int = 0,
    mtp_acceptance: float = 0.0,
    imbalance: float = 1.0,
    precision: Precisions | str = "int8",
    kv_cache: str = "bf16",
    expert_load: ExpertLoad | LayeredExpertLoad | None = None,
    backend: str | None = None,
    system: System | None = None,
) -> Deployment:
    """The one place a Deployment is made from user-level knobs (scenario pools, published layouts, CLI flags).

    `ep` defaults to dies / moe_tp; shared-expert dies and redundant experts left None follow
    `default_expert_layout`; `precision` is a Precisions or a checkpoint family name ("int8", "fp8",
    "fp4", "bf16"; `kv_cache` applies to a name only); `backend` picks the serving stack's profile
    (specs/backend.py; None: the twin's default). With `system` the result is validated."""
    if backend is not None:
        load_backend(backend)  # raises naming the known profiles
    if moe_tp < 1 or dies % moe_tp:
        raise CloudMatrixError(f"MoE TP degree {moe_tp} must be >= 1 and divide the instance's {dies} dies")
    ep = dies // moe_tp if ep is None else ep
    auto_shared, auto_redundant = default_expert_layout(model, ep)
    dep = Deployment(
        dies=dies,
        ep=ep if model.is_moe else None,
        shared_expert_dies=auto_shared if shared_expert_dies is None else shared_expert_dies,
        redundant_experts=auto_redundant if redundant_experts is None else redundant_experts,
        attn_tp=attn_tp,
        moe_tp=moe_tp if model.is_moe else 1,
        microbatches=microbatches,
        mtp_depth=mtp_depth,
        mtp_acceptance=mtp_acceptance if mtp_depth else 0.0,
        imbalance=imbalance,
        precision=precisions_for(precision, kv_cache) if isinstance(precision, str) else precision,
        expert_load=expert_load,
        backend=backend,
    )
    if system is not None:
        dep.validate(model, system)
    return dep
