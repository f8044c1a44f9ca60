"""A deployment of one model instance: how its dies split the work, at what precision.

One *instance* is a group of dies serving one model replica within a pool. The
fields are the knobs of CloudMatrix-Infer (and of DeepSeek's and SGLang's
layouts on GPUs): expert-parallel degree, where shared experts live, redundant
experts, attention parallelism, microbatches, MTP and precisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.specs.hardware import BYTES_PER_ELEMENT, System
from cloudmatrix.specs.model import ModelSpec


@dataclass(frozen=True)
class Precisions:
    weights: str = "int8"  # large matmuls (attention projections, FFN, experts); activations follow (W8A8)
    attention: str = "bf16"  # attention core (scores and values)
    kv_cache: str = "bf16"
    dispatch: str = "int8"  # token hidden states sent to experts (+ one fp32 scale per token when quantised)
    combine: str = "bf16"  # expert outputs sent back
    head: str = "bf16"  # embeddings, LM head, router and norms stay in higher precision


@dataclass(frozen=True)
class Deployment:
    dies: int  # dies in the instance
    ep: int | None = None  # expert-parallel degree in dies (default: all dies of the instance)
    shared_expert_dies: int = 0  # dies holding only shared-expert replicas (0: shared experts on every die)
    redundant_experts: int = 0  # extra routed-expert replicas for load balance (EPLB)
    attn_tp: int = 1  # prefill: heads split over this many dies (SP -> TP -> SP when > 1)
    microbatches: int = 1  # 1 or 2 (two-stream overlap)
    attention_stream_share: float = 2 / 3  # decode, two microbatches: compute share of the attention stream
    mtp_depth: int = 0
    mtp_acceptance: float = 0.0  # probability a draft token is accepted
    imbalance: float = 1.0  # expert load: busiest die / mean die (1.0 = perfect balance)
    precision: Precisions = field(default_factory=Precisions)
    hbm_reserve: float = 0.05  # fraction of HBM kept free for the runtime and fragmentation (assumption)

    @property
    def ep_degree(self) -> int:
        return self.ep if self.ep is not None else self.dies

    @property
    def routed_dies(self) -> int:
        return self.ep_degree - self.shared_expert_dies

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
        """Raise CloudMatrixError naming the first impossible knob and how to fix it."""
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
        if self.dies % self.attn_tp:
            raise CloudMatrixError(f"attention TP degree {self.attn_tp} must divide the instance's {self.dies} dies")
        if self.attn_tp > 1 and model.heads % self.attn_tp:
            raise CloudMatrixError(f"attention TP degree {self.attn_tp} must divide {model.name}'s {model.heads} heads")
        for name in ("weights", "attention", "kv_cache", "dispatch", "combine", "head"):
            p = getattr(self.precision, name)
            if p not in BYTES_PER_ELEMENT:
                raise CloudMatrixError(f"unknown {name} precision {p!r}; use one of {', '.join(BYTES_PER_ELEMENT)}")
        for name in ("weights", "attention"):
            system.chip.peak(getattr(self.precision, name))  # raises if the chip lacks it
        if not model.is_moe:
            return
        ep = self.ep_degree
        if ep <= 0 or self.dies % ep:
            raise CloudMatrixError(f"EP degree {ep} must be positive and divide the instance's {self.dies} dies")
        if not 0 <= self.shared_expert_dies < ep:
            raise CloudMatrixError(
                f"shared_expert_dies={self.shared_expert_dies} must be in [0, EP={ep}); routed experts need dies too"
            )
        if self.shared_expert_dies and model.shared_experts == 0:
            raise CloudMatrixError(f"{model.name} has no shared experts; set shared_expert_dies = 0")
        if self.redundant_experts < 0:
            raise CloudMatrixError(f"redundant_experts must be >= 0, got {self.redundant_experts}")
        slots = model.routed_experts + self.redundant_experts
        if slots % self.routed_dies:
            raise CloudMatrixError(
                f"{model.routed_experts} routed + {self.redundant_experts} redundant experts = {slots} slots do not "
                f"divide evenly over {self.routed_dies} expert dies (EP {ep} - {self.shared_expert_dies} shared-expert "
                f"dies); pick redundant_experts so that the sum is a multiple of {self.routed_dies}"
            )


def precisions_for(name: str, kv_cache: str = "bf16") -> Precisions:
    """The usual precision set for a headline weight precision: W8A8 INT8 (CloudMatrix-Infer), FP8
    (DeepSeek on Hopper), FP4 weights with FP8 dispatch (Blackwell), or plain BF16."""
    dispatch = {"int8": "int8", "fp8": "fp8", "fp4": "fp8", "bf16": "bf16", "fp16": "fp16"}
    if name not in dispatch:
        raise CloudMatrixError(f"unknown precision {name!r}; use one of {', '.join(dispatch)}")
    return Precisions(weights=name, dispatch=dispatch[name], kv_cache=kv_cache)


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
