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


def test_one_router_is_the_global_rotation_and_several_are_not():
    ds = decoders([0, 0, 0])
    one = DecodeRouter("round_robin", 3, routers=1, rng=np.random.default_rng(0))
    assert [one.pick(ds) for _ in range(9)] == [0, 1, 2] * 3
    picks = [DecodeRouter("round_robin", 3, routers=7, rng=np.random.default_rng(s)) for s in (0, 0, 1)]
    runs = [[r.pick(ds) for _ in range(300)] for r in picks]
    assert runs[0] == runs[1]  # the same generator, the same picks
    for run in (runs[0], runs[2]):
        assert run != [k % 3 for k in range(300)]
        assert sum(a == b for a, b in zip(run, run[1:], strict=False)) > 30  # the same instance twice in a row
        counts = np.bincount(run, minlength=3)
        assert counts.min() > 60  # every instance still gets its share over time


def test_several_routers_need_a_generator():
    with pytest.raises(CloudMatrixError, match="random generator"):
        DecodeRouter("round_robin", 3, routers=2)


def test_clients_equal_to_slots_wait_when_several_routers_pick_in_turn():
    """Seven one-slot decode workers, seven clients: one rotation gives each finished client's successor the
    worker that is next in turn, which is nearly always free; seven independent rotations often pick a busy one, and
    the request waits for that worker's running request (decode_slot_wait, a fraction of a request's length)."""
    from cloudmatrix.sim.results import ttft_components

    base = h200_disagg(
        "trtllm", name="routers", nodes=8,
        decode={"instances": 7, "batch_per_die": 1, "batch_per_rank": 1, "attn_tp": 8},
        workload={"concurrency": 7, "num_requests": 70, "output_len": {"kind": "uniform", "lo": 200, "hi": 256}},
    )  # fmt: skip
    waits = {}
    for routers in (1, 7):
        data = base.model_dump(exclude_unset=True)
        data["frontend"] = {"routers": routers}
        sim = build_simulation(Scenario.model_validate(data))
        sim.run()
        hold = float(np.mean(sim.finish - sim.admitted))
        waits[routers] = float(ttft_components(sim)["decode_slot_wait"].mean()) / hold
    assert waits[1] < 0.1 and waits[7] > 0.3
