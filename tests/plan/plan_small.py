"""A small plan request and search space shared by the planner tests (seconds, not minutes)."""

from cloudmatrix.plan.search.planner import Space
from cloudmatrix.plan.search.request import PlanRequest
from cloudmatrix.plan.search.space import InstanceLayout, Software

SYSTEM = "cloudmatrix384"
SW = Software("int8", "bf16", 1, 0.7)


def small_request(**kw) -> PlanRequest:
    base = dict(systems=(SYSTEM,), isl=1024, osl=64, rate=20.0, ttft_p90=2.0, tpot_p90=0.040, top_k=2,
                workers=1, sim_seconds=6.0)  # fmt: skip
    base.update(kw)
    return PlanRequest(**base).validate()


def small_space() -> Space:
    return Space(
        software=[SW],
        decode=[InstanceLayout(32), InstanceLayout(64), InstanceLayout(32, microbatches=1)],
        prefill=[InstanceLayout(16), InstanceLayout(32)],
        prefill_tokens=(2048, 4096),
    )
