"""Decode routing between instances: round robin (the Dynamo frontend's default) against least-loaded."""

import numpy as np
import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.serving.decode_scheduler import DecodeInstance
from cloudmatrix.serving.kv_blocks import KVBlockManager
from cloudmatrix.serving.router import DecodeRouter
from cloudmatrix.sim.scenario import Scenario
from cloudmatrix.sim.simulation import build_simulation
from cloudmatrix.specs.backend import load_backend

from .h200_disagg import h200_disagg


def decoders(loads):
    out = []
    for load in loads:
        d = DecodeInstance(8, KVBlockManager(100, 16))
        for r in range(load):
            d.enqueue(r, 10, 5, 0.0)
        out.append(d)
    return out


def test_round_robin_ignores_load_and_cycles():
    ds = decoders([5, 0, 3])
    rr = DecodeRouter("round_robin", 3)
    assert [rr.pick(ds) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_least_loaded_takes_the_emptiest():
    ds = decoders([5, 0, 3])
    assert DecodeRouter("least_loaded", 3).pick(ds) == 1


def test_unknown_routing_is_a_user_error():
    with pytest.raises(CloudMatrixError, match="decode routing"):
        DecodeRouter("fastest", 2)


def disagg(backend: str | None, conc: int = 16) -> Scenario:
    """Two decode instances of 8 slots (one per die), as many clients as slots, output lengths spread so
    that clients finish at different times."""
    return h200_disagg(
        backend, name="routing", nodes=3, decode={"instances": 2, "batch_per_die": 1},
        workload={"concurrency": conc, "num_requests": 6 * conc, "output_len": {"kind": "uniform", "lo": 4, "hi": 60}},
    )


def loads_at_pick(backend):
    """For every routed request, how many sequences its chosen instance already held or queued."""
    sim = build_simulation(disagg(backend))
    seen = []
    pick = sim.router.pick

    def watched(ds):
        i = pick(ds)
        seen.append(ds[i].running + ds[i].queued)
        return i

    sim.router.pick = watched
    sim.run()
    return sim, np.asarray(seen)


def test_trtllm_rows_route_round_robin_and_sglang_least_loaded():
    assert load_backend("trtllm").handoff.routing == "round_robin"
    assert load_backend("sglang").handoff.routing == "least_loaded"
    sim, _ = loads_at_pick("trtllm")
    assert sim.router.policy == "round_robin"


def test_round_robin_sends_requests_to_full_instances_least_loaded_never_does():
    slots = 8
    # clients == slots: least-loaded always finds the instance with a free slot ...
    _, ll = loads_at_pick("sglang")
    assert ll.size and ll.max() < slots
    # ... round robin sends the next request to the next instance in turn, full or not
    _, rr = loads_at_pick("trtllm")
    assert rr.max() >= slots


def test_tensorrt_llm_rows_pick_prefill_instances_in_turn():
    data = disagg("trtllm", conc=6).model_dump(exclude_unset=True)
    data["prefill"]["instances"] = 2
    data["nodes"] = 4
    sim = build_simulation(Scenario.model_validate(data))
    order = []
    for i, q in enumerate(sim.prefill.queues):
        enqueue = q.enqueue

        def watched(r, length, cached, i=i, enqueue=enqueue):
            order.append(i)
            enqueue(r, length, cached)

        q.enqueue = watched
    sim.run()
    assert len(order) == sim.n and order == [k % 2 for k in range(sim.n)]
    # SGLang's router balances load instead (no turn-taking object)
    data["prefill"]["backend"] = data["decode"]["backend"] = "sglang"
    assert build_simulation(Scenario.model_validate(data))._prefill_rr is None
