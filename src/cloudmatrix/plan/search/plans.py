"""A chosen plan: what to deploy, what the screen predicts, what the simulator measured, why it wins."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cloudmatrix.plan.economics import Economics, cost_per_million_tokens
from cloudmatrix.plan.search.space import InstanceLayout, Software
from cloudmatrix.specs.hardware import System
from cloudmatrix.specs.model import ModelSpec


@dataclass
class Plan:
    system_key: str
    system: System  # as deployed (HGX: sized to the chip limit)
    model: ModelSpec
    software: Software
    decode: InstanceLayout
    batch_per_die: int
    decode_instances: int
    prefill: InstanceLayout | None  # None: colocated (the decode instances run chunked prefill)
    prefill_tokens_per_die: int  # colocated: the chunk budget per die per step
    prefill_instances: int
    rate: float  # requests/s the plan is run at
    tpot: float  # screen: at the batch cap
    ttft: float  # screen estimate, p90
    headroom: float  # bytes per die left in decode at the batch cap, full contexts
    osl: int
    bounding_op: str = ""
    confirmed: dict[str, Any] | None = None  # simulator's figures
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return "colocated" if self.prefill is None else "disaggregated"

    @property
    def chips(self) -> int:
        dpc = self.system.chip.dies
        pre = 0 if self.prefill is None else self.prefill_instances * self.prefill.dies // dpc
        return self.decode_instances * self.decode.dies // dpc + pre

    @property
    def output_tokens_per_s(self) -> float:
        return self.rate * self.osl

    @property
    def tokens_per_chip(self) -> float:
        return self.output_tokens_per_s / self.chips

    @property
    def tokens_per_user(self) -> float:
        return 1.0 / self.tpot

    @property
    def usd(self) -> float:
        return self.system.price_usd * self.chips / self.system.chips

    @property
    def watts(self) -> float:
        return self.system.power * self.chips / self.system.chips

    def cost(self, econ: Economics | None = None):
        """$/M output tokens and J/token of the chips the plan uses, at the screened rate."""
        return cost_per_million_tokens(self.output_tokens_per_s, self.usd, self.watts, econ or Economics())

    @property
    def meets_slo(self) -> bool | None:
        return None if self.confirmed is None else bool(self.confirmed.get("meets_slo"))

    def label(self) -> str:
        m = self.model
        if self.prefill is None:
            chunk = self.prefill_tokens_per_die
            return f"C {self.decode_instances}x[{self.decode.label(m)} b{self.batch_per_die} chunk {chunk}t]"
        return (
            f"P {self.prefill_instances}x[{self.prefill.label(m)} {self.prefill_tokens_per_die}t] "
            f"D {self.decode_instances}x[{self.decode.label(m)} b{self.batch_per_die}]"
        )

    def to_dict(self) -> dict[str, Any]:
        c = self.cost()
        m = self.model
        return {
            "system": self.system_key,
            "mode": self.mode,
            "chips": self.chips,
            "software": {"precision": self.software.precision, "kv_cache": self.software.kv_cache,
                         "mtp_depth": self.software.mtp_depth, "mtp_acceptance": self.software.mtp_acceptance},
            "prefill": None if self.prefill is None else {
                "instances": self.prefill_instances, "dies": self.prefill.dies, "ep": self.prefill.ep(m),
                "attn_tp": self.prefill.attn_tp, "moe_tp": self.prefill.moe_tp,
                "microbatches": self.prefill.microbatches, "tokens_per_die": self.prefill_tokens_per_die},
            "decode" if self.prefill is not None else "colocated": {
                "instances": self.decode_instances, "dies": self.decode.dies, "ep": self.decode.ep(m),
                       "attn_tp": self.decode.attn_tp, "moe_tp": self.decode.moe_tp,
                       "microbatches": self.decode.microbatches, "batch_per_die": self.batch_per_die,
                **({} if self.prefill is not None else {"tokens_per_die": self.prefill_tokens_per_die})},
            "rate_requests_per_s": self.rate,
            "screen": {"tpot_s": self.tpot, "ttft_p90_s": self.ttft,
                       "output_tokens_per_s_per_chip": self.tokens_per_chip,
                       "tokens_per_s_per_user": self.tokens_per_user},
            "bounding_op": self.bounding_op,
            "hbm_headroom_gb_per_die": self.headroom / 1e9,
            "usd": self.usd,
            "kw": self.watts / 1e3,
            "usd_per_million_output_tokens": c.usd_per_million_tokens,
            "joules_per_output_token": c.joules_per_token,
            "confirmed": self.confirmed,
        }  # fmt: skip
