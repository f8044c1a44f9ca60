"""Published serving layouts of DeepSeek-V3/R1 on each system, as `compare` deploys them.

A layout names the prefill instance, the decode instance(s) the pool-split sweep may choose from (the
published one first), the precisions and the MTP/microbatch settings, each with its source. The same
software features (two microbatches, MTP 1 draft at 70% acceptance) are applied to every system so the
comparison isolates the hardware; where a publication used something else the comment says so.

Sources:
[cm-paper]  Zuo et al., "Serving Large Language Models on Huawei CloudMatrix384", arXiv 2506.12708
            (reference/cloudmatrix384.md): prefill 16 NPUs = 32 dies EP32; decode 160 NPUs = 320 dies EP320
            (256 routed + 32 shared replicas + 32 redundant); W8A8 INT8; MTP 1 @ 70%; two microbatches;
            16,384 prompt tokens per NPU per prefill batch.
[ds-infer]  DeepSeek, "Day 6: DeepSeek-V3/R1 inference system overview" (Feb 2025; reference/calibration.md):
            prefill units of 4 nodes (EP32), decode units of 18 nodes (EP144), 32 redundant experts, FP8
            matmuls, two-microbatch overlap in both phases. 256 + 32 = 288 = 144 x 2 slots.
[lmsys-gb2] LMSYS / SGLang team, "Deploying DeepSeek on GB200 NVL72 with PD and Large Scale EP (Part II)",
            lmsys.org/blog/2025-09-25-gb200-part-2: FP8 attention (FP8 KV cache) + NVFP4 MoE; its reproduction
            scripts (github.com/shifangx/Scripts-SGLang) use prefill groups of 2 nodes (8 GPUs) and one decode
            group of 12 nodes (48 GPUs). Part I (lmsys.org/blog/2025-06-16-gb200-part-1) ran decode on 12 nodes
            and prefill on the rest ("6 nodes for prefill and 12 for decode when having 18"); it did not use MTP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf.deployment import Deployment, Precisions, build_deployment, precisions_for
from cloudmatrix.specs.model import ModelSpec

# 16,384 prompt tokens per NPU per prefill batch [cm-paper] §5; used for every chip (assumption for GPUs).
PREFILL_TOKENS_PER_CHIP = 16384


@dataclass(frozen=True)
class InstanceShape:
    """One instance of a pool: dies, EP degree and expert slots. `redundant_experts=None` means
    cloudmatrix.perf.deployment.default_expert_layout picks shared/redundant dies for the model."""

    dies: int
    ep: int
    redundant_experts: int | None = None
    shared_expert_dies: int | None = None

    def deployment(self, model: ModelSpec, layout: Layout) -> Deployment:
        return build_deployment(
            model,
            dies=self.dies,
            ep=self.ep,
            shared_expert_dies=self.shared_expert_dies,
            redundant_experts=self.redundant_experts,
            microbatches=layout.microbatches,
            mtp_depth=layout.mtp_depth if model.mtp_layers else 0,
            mtp_acceptance=layout.mtp_acceptance if model.mtp_layers else 0.0,
            imbalance=layout.imbalance,
            precision=layout.precision,
        )


@dataclass(frozen=True)
class Layout:
    key: str  # what the user typed: a catalog system name, optionally ":precision"
    system: str  # catalog system name
    precision: Precisions
    prefill: InstanceShape
    decode_options: tuple[InstanceShape, ...]  # the published decode instance first
    sized_by_layout: bool = False  # HGX clusters are bought by the node: size the cluster to the pool split
    microbatches: int = 2
    mtp_depth: int = 1
    mtp_acceptance: float = 0.7
    imbalance: float = 1.0  # perfect expert balance on every system (the cost model's idealisation)
    sources: tuple[str, ...] = field(default_factory=tuple)

    @property
    def precision_label(self) -> str:
        return self.precision.label()


# Blackwell published precision [lmsys-gb2]: NVFP4 MoE (experts and dense FFN, nvidia/DeepSeek-R1-FP4),
# FP8 attention projections, attention core and KV cache, FP8 token dispatch.
_BLACKWELL: Precisions = precisions_for("fp4", kv_cache="fp8", attention="fp8")

_CM384 = dict(
    precision=precisions_for("int8"),  # [cm-paper]: W8A8 INT8 matmuls, INT8 dispatch, BF16 combine/KV
    prefill=InstanceShape(dies=32, ep=32),  # [cm-paper] EP32: 8 routed + 1 redundant + 1 shared per die
    # [cm-paper] EP320 (256 + 32 shared + 32 redundant); EP160 is our alternative for the split sweep
    decode_options=(InstanceShape(dies=320, ep=320), InstanceShape(dies=160, ep=160)),
    sources=(
        "prefill EP32 (16 NPUs), decode EP320 (160 NPUs), INT8, MTP 1 @ 70%, 2 microbatches: Zuo et al., "
        "arXiv 2506.12708 (CloudMatrix-Infer)",
        "decode EP160 alternative: assumption, offered to the pool-split sweep",
    ),
)

_HGX = dict(
    precision=precisions_for("fp8"),  # [ds-infer]: FP8 matmuls and dispatch, BF16 combine; BF16 KV (FlashMLA)
    prefill=InstanceShape(dies=32, ep=32, redundant_experts=32),  # [ds-infer]: 4 nodes, EP32, 32 redundant
    decode_options=(
        InstanceShape(dies=144, ep=144, redundant_experts=32, shared_expert_dies=0),  # [ds-infer]: 18 nodes
        InstanceShape(dies=72, ep=72, redundant_experts=32, shared_expert_dies=0),  # assumption: 9 nodes
    ),
    sized_by_layout=True,
    sources=(
        "prefill units of 4 nodes (EP32), decode units of 18 nodes (EP144), 32 redundant experts, FP8, "
        "two-microbatch overlap: DeepSeek, 'Day 6: DeepSeek-V3/R1 inference system overview' (Feb 2025)",
        "MTP 1 @ 70% on every system (DeepSeek serves with MTP; 70% is CloudMatrix-Infer's assumption)",
        "decode EP72 (9 nodes) alternative: assumption; the cluster is sized to whole instances",
    ),
)

_NVL72 = dict(
    precision=_BLACKWELL,
    # [lmsys-gb2] reproduction scripts: prefill groups of 2 nodes = 8 GPUs; 32 redundant experts (assumption)
    prefill=InstanceShape(dies=8, ep=8, redundant_experts=32),
    decode_options=(
        InstanceShape(dies=48, ep=48, redundant_experts=32),  # [lmsys-gb2]: 12 nodes; 288 = 48 x 6 slots
        InstanceShape(dies=56, ep=56, redundant_experts=24),  # assumption: 14 nodes; 280 = 56 x 5 slots
        InstanceShape(dies=32, ep=32, redundant_experts=32),  # assumption: 8 nodes; 288 = 32 x 9 slots
    ),
    sources=(
        "prefill groups of 2 nodes (8 GPUs, EP8), decode on 12 nodes (48 GPUs, EP48), FP8 attention + NVFP4 MoE: "
        "LMSYS, 'Deploying DeepSeek on GB200 NVL72 with PD and Large Scale EP (Part II)', Sep 2025",
        "decode on 56 or 32 GPUs, 32/24 redundant experts, MTP 1 @ 70% and 2 microbatches: assumptions "
        "(LMSYS ran without MTP)",
        "NVFP4 for the experts and dense FFN, FP8 attention projections (nvidia/DeepSeek-R1-FP4 excludes self_attn)",
    ),
)

_LAYOUTS: dict[str, dict] = {
    "cloudmatrix384": _CM384,
    "gb200-nvl72": _NVL72,
    "gb300-nvl72": {**_NVL72, "sources": (*_NVL72["sources"], "GB300 NVL72: the GB200 layout (assumption)")},
    "hgx-h800": _HGX,
    "hgx-h100": {**_HGX, "sources": (*_HGX["sources"], "H100: DeepSeek's H800 layout (assumption)")},
    "hgx-h200": {**_HGX, "sources": (*_HGX["sources"], "H200: DeepSeek's H800 layout (assumption)")},
    "hgx-b200": {
        **_HGX,
        "precision": _BLACKWELL,
        "sources": (
            *_HGX["sources"],
            "B200: DeepSeek's H800 layout with the Blackwell precisions of LMSYS (assumption)",
        ),
    },
}

KNOWN_SYSTEMS = tuple(_LAYOUTS)


def layout_for(key: str) -> Layout:
    """The layout of a catalog system, e.g. "gb200-nvl72", or with another headline precision,
    e.g. "gb200-nvl72:fp8" (FP8 weights, BF16 attention and KV: LMSYS's "traditional precision")."""
    name, _, prec = key.strip().partition(":")
    if name not in _LAYOUTS:
        raise CloudMatrixError(
            f"no serving layout for system {name!r}; compare knows {', '.join(KNOWN_SYSTEMS)} "
            f"(optionally with ':int8', ':fp8', ':fp4' or ':bf16', e.g. gb200-nvl72:fp8)"
        )
    spec = dict(_LAYOUTS[name])
    if prec:
        spec["precision"] = precisions_for(prec)  # raises on an unknown precision
        spec["sources"] = (*spec["sources"], f"precision overridden to {prec} weights with BF16 attention and KV")
    return Layout(key=key.strip(), system=name, **spec)
