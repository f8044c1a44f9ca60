"""SGLang's request polling under its overlap scheduler, as the 0.5.9 / 0.5.10.post1 source has it
(managers/scheduler.py event_loop_overlap + recv_requests, scheduler_recv_skipper.py): the skipper counts the
forward launched last, which under overlap is the one the GPU is running when the poll happens."""

import numpy as np

from cloudmatrix.sim.scenario import load_scenario
from cloudmatrix.sim.simulation import build_simulation

from .h200_colocated import h200_colocated

SCENARIO = h200_colocated(
    "sglang-recv", instances=1, dies=8, ep=8, microbatches=1, shared_expert_dies=0, redundant_experts=0,
    tokens_per_die=1024, batch_per_die=8, backend="sglang",
) + """recv_interval = {interval}
[workload]
kind = "trace"
trace = "t.csv"
"""


def _run(tmp_path, interval, trace):
    (tmp_path / "t.csv").write_text("arrival_time,input_len,output_len\n" + trace)
    (tmp_path / "s.toml").write_text(SCENARIO.format(interval=interval))
    sim = build_simulation(load_scenario(tmp_path / "s.toml"))
    sim.run()
    return sim


def test_a_prompt_that_arrives_while_a_prefill_runs_waits_for_the_next_interval(tmp_path):
    # request 0 starts an idle instance; request 1 arrives 1 ms later, while request 0's prefill runs. SGLang polls
    # at the prefill's launch (weight 1,000, counted on the running forward) and restarts the count there, so
    # request 1 is taken in only after `interval` decode forwards, not by a poll at the prefill's end.
    interval = 8
    sim = _run(tmp_path, interval, "0.0,1024,200\n0.001,1024,200\n")
    starts = np.asarray(sim.step_start["colocated"])
    assert sim.prefill_end[0] > 0.001  # the premise: it arrived during the first prefill
    decode_steps_between = ((starts >= sim.prefill_end[0]) & (starts < sim.prefill_start[1])).sum()
    assert decode_steps_between >= interval


def test_without_an_interval_that_prompt_runs_right_after_the_prefill(tmp_path):
    sim = _run(tmp_path, 1, "0.0,1024,200\n0.001,1024,200\n")
    starts = np.asarray(sim.step_start["colocated"])
    # polled at every launch: received while the first decode step is formed, prefilled after that one step
    assert ((starts >= sim.prefill_end[0]) & (starts < sim.prefill_start[1])).sum() == 1


def test_the_skipper_polls_when_the_weights_reach_the_interval_and_restarts():
    from cloudmatrix.sim.scheduling import RecvSkipper

    s = RecvSkipper(3)
    s.add(prefill=False)
    s.add(prefill=False)
    assert not s.due
    s.add(prefill=False)
    assert s.due
    s.polled()
    assert not s.due
    s.add(prefill=True)  # any forward that is not a decode step passes the interval at once
    assert s.due
    s.polled()
    s.force()  # an idle scheduler polls at its next check
    assert s.due
