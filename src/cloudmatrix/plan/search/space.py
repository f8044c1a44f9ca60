"""The layouts a plan may use: plan-wide software (precision, KV cache, MTP) and instance shapes per pool.

Each layout is turned into a Deployment by `perf.build_deployment` exactly as a scenario's pool is
(`sim.scenario.Scenario.deployment`), so the screen, the written scenario and `simulate` cost the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf import Deployment, build_deployment
from cloudmatrix.perf.deployment import MATMUL_CLASSES, precisions_for
from cloudmatrix.specs.hardware import System
from cloudmatrix.specs.model import ModelSpec

# Instance sizes in dies: powers of two, the node multiples HGX layouts use and the EP >= 256 sizes of
# CloudMatrix-Infer (256 routed + shared/redundant replicas; paper §4.2 uses 320).
INSTANCE_DIES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 72, 96, 128, 144, 160, 192, 256, 288, 320, 384, 512, 576, 640, 768)
TP_DEGREES = (1, 2, 4, 8)
# attention / MoE TP are tried on instances up to this size; larger MoE instances run pure DP attention
# and pure EP, as every published large-EP layout does (the space stays small enough to screen in seconds)
MAX_TP_INSTANCE_DIES = 64
PREFILL_TOKENS_PER_DIE = (2048, 4096, 8192, 16384)  # token budget per die per prefill batch
COLOCATED_CHUNK_PER_DIE = (512, 2048)  # chunked-prefill budget per die per mixed step
# The scenario format holds these weight families and KV precisions (sim.scenario.PrecisionSpec).
WEIGHT_FAMILIES = ("int8", "fp8", "fp4", "bf16")
KV_FOR_FAMILY = {"int8": ("bf16", "int8"), "fp8": ("bf16", "fp8"), "fp4": ("bf16", "fp8"), "bf16": ("bf16",)}
MAX_MTP_DEPTH = 2


@dataclass(frozen=True)
class Software:
    """Choices a scenario makes once for all pools."""

    precision: str  # weight family, perf.deployment.precisions_for
    kv_cache: str
    mtp_depth: int
    mtp_acceptance: float

    def label(self) -> str:
        mtp = f"MTP {self.mtp_depth} @ {self.mtp_acceptance:.0%}" if self.mtp_depth else "no MTP"
        return f"{self.precision}, KV {self.kv_cache}, {mtp}"


@dataclass(frozen=True)
class InstanceLayout:
    """One pool's instance: dies, attention TP, MoE TP (EP = dies / MoE TP), microbatches."""

    dies: int
    attn_tp: int = 1
    moe_tp: int = 1
    microbatches: int = 2

    def ep(self, model: ModelSpec) -> int | None:
        return self.dies // self.moe_tp if model.is_moe else None

    def label(self, model: ModelSpec) -> str:
        par = f"EP{self.ep(model)}" if model.is_moe else f"TP{self.attn_tp}"
        extra = "".join(
            [f" aTP{self.attn_tp}" if model.is_moe and self.attn_tp > 1 else "",
             f" mTP{self.moe_tp}" if self.moe_tp > 1 else ""]
        )  # fmt: skip
        return f"{self.dies}d {par}{extra} mb{self.microbatches}"

    def deployment(self, model: ModelSpec, sw: Software, system: System | None = None) -> Deployment:
        return build_deployment(
            model,
            dies=self.dies,
            ep=self.ep(model),
            attn_tp=self.attn_tp,
            moe_tp=self.moe_tp if model.is_moe else 1,
            microbatches=self.microbatches,
            mtp_depth=sw.mtp_depth,
            mtp_acceptance=sw.mtp_acceptance,
            precision=sw.precision,
            kv_cache=sw.kv_cache,
            system=system,
        )


def software_options(model: ModelSpec, system: System, acceptance: float) -> list[Software]:
    """Weight families the chip computes natively in every matmul class, their KV options, MTP depths."""
    out = []
    for fam in WEIGHT_FAMILIES:
        p = precisions_for(fam)
        try:
            for name in (*MATMUL_CLASSES, "attention"):
                system.chip.peak(getattr(p, name))
        except CloudMatrixError:
            continue
        for kv in KV_FOR_FAMILY[fam]:
            for depth in range(0, (MAX_MTP_DEPTH if model.mtp_layers else 0) + 1):
                out.append(Software(fam, kv, depth, acceptance if depth else 0.0))
    return out


def instance_layouts(
    model: ModelSpec, system: System, sw: Software, max_dies: int, dies: tuple[int, ...] = INSTANCE_DIES
) -> list[InstanceLayout]:
    """Every valid instance shape up to `max_dies` (whole chips). Attention TP and MoE TP are tried one at a
    time on MoE models (both at once multiplies the space for layouts that large-EP serving does not use)."""
    out = []
    for d in dies:
        if d > max_dies or d % system.chip.dies:
            continue
        combos = {(1, 1)}
        if d <= MAX_TP_INSTANCE_DIES or not model.is_moe:
            combos |= {(t, 1) for t in TP_DEGREES} | ({(1, t) for t in TP_DEGREES} if model.is_moe else set())
        for attn_tp, moe_tp in sorted(combos):
            for mb in (1, 2):
                lay = InstanceLayout(d, attn_tp, moe_tp, mb)
                try:
                    lay.deployment(model, sw, system)
                except CloudMatrixError:
                    continue
                out.append(lay)
    return out
