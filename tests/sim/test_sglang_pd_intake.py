"""SGLang PD: the prefill starts a prompt only once the decode server's scheduler has taken the request in
(a busy decode scheduler at the end of its current step, an idle one at once) and reserved its KV."""

import numpy as np
import pytest

from cloudmatrix.sim.simulation import build_simulation
from cloudmatrix.specs.backend import load_backend

from .h200_disagg import h200_disagg


def run(instances: int = 1, intake: bool = True):
    sc = h200_disagg(
        "sglang", name="pd-intake", nodes=1 + instances, decode={"batch_per_die": 2, "instances": instances},
        workload={"concurrency": 6, "num_requests": 30, "output_len": {"kind": "uniform", "lo": 4, "hi": 40}},
    )
    sim = build_simulation(sc)
    if not intake:  # the same run with only this behaviour switched off
        sim.handoff = sim.handoff.model_copy(update={"prefill_after_decode_intake": False})
    sim.run()
    start = np.frombuffer(sim.step_start["decode"], dtype=np.float64)
    end = start + np.frombuffer(sim.step_dt["decode"], dtype=np.float64)
    return sim, start, end


def test_only_sglang_waits_for_the_decode_intake():
    assert load_backend("sglang").handoff.prefill_after_decode_intake
    assert not load_backend("trtllm").handoff.prefill_after_decode_intake


def test_a_prompt_that_arrives_during_a_decode_step_is_taken_in_when_it_ends():
    sim, start, end = run()
    gated = 0
    for r in range(sim.n):
        q, taken = sim.queued[r], sim.decode_intake[r]
        assert sim.prefill_start[r] >= taken >= q
        running = np.flatnonzero((start <= q) & (end > q))  # the decode step running at its arrival, if any
        if taken > q:
            gated += 1
            # recv interval 1 (sglang.toml [scheduling]): the poll after the step running at its arrival
            assert len(running) == 1 and taken == pytest.approx(end[running[0]], abs=1e-12)
        else:  # the decode scheduler was idle (or between steps): taken in at once
            assert not np.any((start < q) & (end > q))
    assert gated > 0  # the case exists: requests arrive while the decode pool is stepping


def test_with_two_decode_instances_each_is_taken_in_at_a_step_end_of_its_own_instance():
    sim, _, end = run(instances=2)
    late = sim.decode_intake > sim.queued
    assert late.any()
    for r in np.flatnonzero(late):
        assert np.any(np.isclose(end, sim.decode_intake[r], rtol=0, atol=1e-12))


def test_the_intake_delays_the_prefill_and_the_first_token():
    on, _, _ = run()
    off, _, _ = run(intake=False)
    assert np.all(np.isnan(off.decode_intake))  # nothing taken in: the prompt went straight to the prefill
    wait_on = on.prefill_start - on.queued
    wait_off = off.prefill_start - off.queued
    assert np.count_nonzero(wait_off == 0) > np.count_nonzero(wait_on == 0)
    ttft = lambda s: np.mean(s.first_token - s.queued)  # noqa: E731
    assert ttft(on) > ttft(off)
