"""An EP group placed as Ray actors in one placement group (local Ray cluster), rendezvous address from Ray:
lockstep generation over 2 ranks, one with no requests, gives the tokens of one process."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
ray = pytest.importorskip("ray")

from cloudmatrix.engine.loader import random_model  # noqa: E402
from cloudmatrix.engine.model.config import ModelConfig  # noqa: E402
from cloudmatrix.engine.parallel import SlotMap, StepSync, use_expert_parallel  # noqa: E402
from cloudmatrix.engine.parallel.ep_generate import lockstep_generate  # noqa: E402
from cloudmatrix.engine.parallel.ray_launch import run_ranks_ray  # noqa: E402
from cloudmatrix.errors import CloudMatrixError  # noqa: E402

from .tiny_configs import RAY_MODEL  # noqa: E402

PROMPTS = [[[1, 2, 3, 4], [9, 8]], []]  # rank 1 has no requests: it runs empty steps only
MAX_NEW = [[5, 3], []]


def _rank(rank: int, world: int) -> dict:
    import ray as ray_in_actor

    torch.set_num_threads(1)
    model = random_model(ModelConfig.from_dict(dict(RAY_MODEL)), seed=2)
    use_expert_parallel(model, SlotMap.build(RAY_MODEL["n_routed_experts"], world))
    res = lockstep_generate(model, StepSync(model), PROMPTS[rank], MAX_NEW[rank], block_size=4)
    return {"tokens": res.tokens, "idle": res.idle_passes, "node": ray_in_actor.util.get_node_ip_address()}


@torch.inference_mode()
def _one_process(model, prompt, n):
    cache = model.new_cache(num_blocks=8, block_size=4)
    sid = cache.add_sequence()
    h = model(torch.tensor(prompt), cache.plan([sid], [len(prompt)]), cache)
    toks = [int(model.logits(h[-1:]).argmax(-1))]
    while len(toks) < n:
        toks.append(int(model.logits(model(torch.tensor(toks[-1:]), cache.plan([sid], [1]), cache)).argmax(-1)))
    return toks


@pytest.fixture(scope="module")
def local_ray():
    import sys

    from ray import cloudpickle

    # Ray's workers cannot import this test module by name: ship its functions by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_ep_group_on_ray_actors_matches_one_process(local_ray):
    results = run_ranks_ray(_rank, 2, timeout_s=120)
    ref = random_model(ModelConfig.from_dict(dict(RAY_MODEL)), seed=2)
    assert results[0]["tokens"] == [_one_process(ref, p, n) for p, n in zip(PROMPTS[0], MAX_NEW[0], strict=True)]
    assert results[1]["tokens"] == [] and results[1]["idle"] == max(MAX_NEW[0])  # served the other rank's tokens
    assert results[0]["node"] == results[1]["node"] == ray.util.get_node_ip_address()


def test_unplaceable_group_is_a_one_line_error(local_ray):
    with pytest.raises(CloudMatrixError, match="could not place 3 ranks"):
        run_ranks_ray(_rank, 3, cpus_per_rank=1, strategy="STRICT_PACK", timeout_s=3)
