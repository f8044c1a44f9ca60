"""A small disaggregated DeepSeek-R1 deployment on HGX H200 that the hand-off and routing tests vary."""

from __future__ import annotations

from cloudmatrix.sim.scenario import Scenario


def h200_disagg(backend: str | None, *, name: str, nodes: int, decode: dict, workload: dict) -> Scenario:
    """One 8-GPU EP8 prefill instance (1,024 tokens per die per step) and decode instances of 8 GPUs (EP8),
    FP8 weights and KV, uniform experts; `decode` and `workload` add to or override the defaults;
    `backend` (when given) serves both pools."""
    pool = {"dies": 8, "ep": 8, "shared_expert_dies": 0, "redundant_experts": 0, "microbatches": 1}
    data = {
        "name": name,
        "system": "hgx-h200",
        "model": "deepseek-r1",
        "nodes": nodes,
        "precision": {"weights": "fp8", "kv_cache": "fp8"},
        "experts": {"popularity": "uniform", "placement": "none"},
        "prefill": {"instances": 1, **pool, "tokens_per_die": 1024},
        "decode": {"instances": 1, **pool, **decode},
        "workload": {"kind": "closed", "input_len": 512, **workload},
    }
    if backend is not None:
        data["prefill"]["backend"] = data["decode"]["backend"] = backend
    return Scenario.model_validate(data)
