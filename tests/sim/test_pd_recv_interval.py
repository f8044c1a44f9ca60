"""SGLang PD: the decode server's --scheduler-recv-interval on a disaggregated decode pool (its intake polls every N
decode forwards), accepted only where the stack polls, refused on a prefill pool where it does nothing."""

import numpy as np
import pytest
from pydantic import ValidationError

from cloudmatrix.sim.scenario import Scenario
from cloudmatrix.sim.simulation import build_simulation

from .h200_disagg import h200_disagg

WORKLOAD = {"concurrency": 6, "num_requests": 30, "output_len": {"kind": "uniform", "lo": 4, "hi": 40}}


def scenario(backend="sglang", decode=None):
    pool = {"batch_per_die": 2, **(decode or {})}
    return h200_disagg(backend, name="pd-recv", nodes=2, decode=pool, workload=WORKLOAD)


def run(recv: int):
    sim = build_simulation(scenario(decode={"recv_interval": recv}))
    sim.run()
    start = np.frombuffer(sim.step_start["decode"], dtype=np.float64)
    end = start + np.frombuffer(sim.step_dt["decode"], dtype=np.float64)
    return sim, start, end


def test_a_sglang_decode_pool_takes_recv_interval():
    assert scenario(decode={"recv_interval": 10}).decode.recv_interval == 10


def test_a_decode_pool_whose_stack_does_not_poll_refuses_it():
    with pytest.raises(ValidationError, match=r"\[decode\] recv_interval needs a backend whose decode scheduler polls"):
        scenario("trtllm", decode={"recv_interval": 10})


def test_a_prefill_pool_refuses_it():
    data = scenario().model_dump(exclude_none=True)  # the same deployment, prefill pool given the interval
    data["prefill"]["recv_interval"] = 10
    with pytest.raises(ValidationError, match=r"\[prefill\] recv_interval does nothing in a prefill pool"):
        Scenario.model_validate(data)


def waits_past_the_running_step(sim, start, end) -> int:
    """Requests taken in later than the end of the decode step running when they arrived."""
    late = 0
    for r in range(sim.n):
        q, taken = sim.queued[r], sim.decode_intake[r]
        running = np.flatnonzero((start <= q) & (end > q))
        if len(running) and taken > end[running[0]] + 1e-12:
            late += 1
    return late


def test_with_interval_10_the_intake_waits_for_later_polls_than_with_1():
    every, s1, e1 = run(1)
    tenth, s10, e10 = run(10)
    assert waits_past_the_running_step(every, s1, e1) == 0  # interval 1: the poll after the running step
    assert waits_past_the_running_step(tenth, s10, e10) > 0  # interval 10: some wait several decode steps
    wait = lambda s: np.mean(s.decode_intake - s.queued)  # noqa: E731
    assert wait(tenth) > wait(every)
    ttft = lambda s: np.mean(s.first_token - s.queued)  # noqa: E731
    assert ttft(tenth) > ttft(every)
