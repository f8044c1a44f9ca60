"""Colocated step scheduling per serving stack: mixed or separate prefill, whole or chunked prompts,
overlap of scheduling with the running step, and SGLang's request-polling interval."""

import numpy as np
import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.serving.prefill_scheduler import PrefillQueue
from cloudmatrix.sim.scenario import load_scenario
from cloudmatrix.sim.scheduling import scheduling_for
from cloudmatrix.sim.simulation import build_simulation
from cloudmatrix.specs.backend import load_backend

from .h200_colocated import h200_colocated, toml_value

BASE = h200_colocated(instances=1, dies=8, ep=8, microbatches=1, shared_expert_dies=0, redundant_experts=0)
CLOSED = """[workload]
kind = "closed"
concurrency = 8
num_requests = 48
input_len = { kind = "uniform", lo = 800, hi = 1024 }
output_len = { kind = "uniform", lo = 20, hi = 40 }
"""


@pytest.fixture
def run(tmp_path):
    def go(workload: str = CLOSED, trace: str | None = None, **pool):
        pool.setdefault("tokens_per_die", 1024)
        pool.setdefault("batch_per_die", 8)
        text = BASE + "".join(f"{k} = {toml_value(v)}\n" for k, v in pool.items()) + workload
        if trace is not None:
            (tmp_path / "t.csv").write_text(trace)
        (tmp_path / "s.toml").write_text(text)
        sim = build_simulation(load_scenario(tmp_path / "s.toml"))
        sim.run()
        return sim

    return go


def _steps(sim):
    """(start, duration, sequences decoding) of every step, in order."""
    return np.asarray(sim.step_start["colocated"]), np.asarray(sim.step_dt["colocated"]), np.asarray(sim.run_n)


def _step_of(starts, t):
    i = int(np.searchsorted(starts, t))
    assert starts[i] == t  # a prefill span starts with a step
    return i


TWO = """[workload]
kind = "trace"
trace = "t.csv"
"""


def test_overlap_makes_a_request_that_arrives_mid_step_wait_one_more_step(run):
    trace = "arrival_time,input_len,output_len\n0.0,1024,50\n0.001,1024,50\n"
    plain = run(TWO, trace, overlap=False)
    over = run(TWO, trace, overlap=True)
    # without overlap the second prompt joins the step after the one running when it came
    assert plain.prefill_start[1] == plain.prefill_end[0]
    # with overlap that step was formed at t = 0, before it came: it decodes the first request alone
    starts, _, n = _steps(over)
    assert starts[1] == over.prefill_end[0] and n[1] == 1
    assert over.prefill_start[1] == starts[2] > starts[1]


def test_separate_prefill_pauses_decode_and_mixed_runs_both(run):
    for mode, expect_mixed in (("separate", False), ("mixed", True)):
        sim = run(prefill_mode=mode, overlap=False)
        starts, _, n = _steps(sim)
        decoding = [n[_step_of(starts, t)] for t in sim.in_s]
        assert any(d > 0 for d in decoding) == expect_mixed, mode


def test_mixed_step_budget_counts_the_decode_tokens(run):
    sim = run(prefill_mode="mixed", tokens_per_die=128)  # 1,024 tokens a step for the instance
    starts, _, n = _steps(sim)
    steps = [_step_of(starts, t) for t in sim.in_s]
    assert max(n[steps]) > 0
    assert all(tokens <= 1024 - n[i] for tokens, i in zip(sim.in_n, steps, strict=True))


def test_whole_prompts_run_in_one_step_and_chunked_ones_in_several(run):
    starts, dts, _ = _steps(whole := run(chunked_prefill=False))
    i = [_step_of(starts, t) for t in whole.prefill_start]
    assert np.allclose(whole.prefill_end, starts[i] + dts[i])  # one step each
    chunked = run(chunked_prefill=True, tokens_per_die=64)  # 512 tokens a step: every prompt takes two or more
    starts, dts, _ = _steps(chunked)
    i = [_step_of(starts, t) for t in chunked.prefill_start]
    assert (chunked.prefill_end > starts[i] + dts[i] + 1e-12).all()


def test_whole_prompts_longer_than_the_step_budget_are_refused(run):
    with pytest.raises(CloudMatrixError, match="exceeds the step budget"):
        run(chunked_prefill=False, tokens_per_die=64)


def test_queue_takes_whole_prompts_in_order_while_they_fit():
    q = PrefillQueue(4096)
    for r, n in enumerate((3000, 3000, 500)):
        q.enqueue(r, n, 0)
    b = q.next_batch(chunked=False)
    assert (b.requests, b.tokens, b.finishing) == ([0], 3000, [0])  # the 500 does not jump the second 3000
    assert q.next_batch(1000, chunked=False) is None  # the head does not fit 1,000: nothing runs
    q2 = PrefillQueue(4096)
    for r, n in enumerate((3000, 3000, 500)):
        q2.enqueue(r, n, 0)
    assert q2.next_batch().tokens == 4096  # chunked: the second prompt is split


def test_polling_interval_keeps_new_requests_out_for_several_decode_steps(run):
    waits = {}
    for interval in (1, 8):
        sim = run(prefill_mode="separate", overlap=True, recv_interval=interval)
        starts, _, _ = _steps(sim)
        # steps that start while a request is queued: with overlap one more than the steps it was kept out
        between = [((starts > q) & (starts < p)).sum() for q, p in zip(sim.queued, sim.prefill_start, strict=True)]
        waits[interval] = (max(between), float(np.mean(sim.first_token - sim.arrival)))
        assert max(between) <= interval + 1
    assert waits[8][0] > 2 and waits[8][1] > waits[1][1]


def test_backend_defaults_and_pool_overrides(tmp_path):
    sized = BASE + "tokens_per_die = 1024\nbatch_per_die = 8\n"
    (tmp_path / "s.toml").write_text(sized + 'backend = "trtllm"\n' + CLOSED)
    pool = load_scenario(tmp_path / "s.toml").colocated
    assert scheduling_for(pool) == load_backend("trtllm").scheduling
    assert not scheduling_for(pool).chunked and scheduling_for(pool).overlap
    (tmp_path / "s.toml").write_text(sized + 'backend = "sglang"\nrecv_interval = 30\n' + CLOSED)
    s = scheduling_for(load_scenario(tmp_path / "s.toml").colocated)
    assert (s.prefill, s.chunked, s.overlap, s.recv_interval) == ("separate", True, True, 30)


def test_scheduling_keys_are_refused_in_disaggregated_pools():
    with pytest.raises(CloudMatrixError, match="overlap does nothing in a decode pool"):
        load_scenario("default", {"decode.overlap": True})


def test_attention_dp_balance_holds_a_lone_prompt_while_every_rank_decodes(run):
    # 8 ranks (attention DP), 16 long-running sequences, then one prompt: it waits for the balance timeout
    trace = "arrival_time,input_len,output_len\n" + "0.0,512,400\n" * 16 + "0.5,512,5\n"
    waits = {}
    for timeout in (0, 20):
        sim = run(TWO, trace, balance_timeout=timeout, overlap=False)
        starts, _, n = _steps(sim)
        kept = ((starts > sim.queued[16]) & (starts < sim.prefill_start[16])).sum()
        waits[timeout] = kept
        assert n[int(np.searchsorted(starts, sim.prefill_start[16]))] >= 8  # every rank was decoding
    assert waits[0] == 0 and 0 < waits[20] <= 20


def test_attention_dp_balance_runs_prompts_at_once_when_every_rank_has_one(run):
    trace = "arrival_time,input_len,output_len\n" + "0.0,512,400\n" * 16 + "0.5,512,5\n" * 8
    sim = run(TWO, trace, balance_timeout=20, overlap=False)
    starts, _, _ = _steps(sim)
    assert all(((starts > sim.queued[r]) & (starts < sim.prefill_start[r])).sum() <= 1 for r in range(16, 24))


def test_separate_prefill_starts_no_prompt_without_a_running_slot(run):
    # 8 slots (batch_per_die 1 x 8 dies), 16 clients: a prompt is prefilled only when a slot is free for it
    wl = CLOSED.replace("concurrency = 8", "concurrency = 16")
    sim = run(wl, prefill_mode="separate", batch_per_die=1)
    assert np.allclose(sim.admitted, sim.prefill_end)  # nobody waits for a slot after its prefill
    mixed = run(wl, prefill_mode="mixed", batch_per_die=1)
    assert (mixed.admitted > mixed.prefill_end + 1e-9).any()  # the mixed engine prefills ahead of its slots


def test_queue_limits_new_prompts_but_continues_one_in_progress():
    q = PrefillQueue(1000)
    for r, n in enumerate((1500, 100, 100)):
        q.enqueue(r, n, 0)
    assert q.next_batch(new_requests=1).requests == [0]  # begun: 1,000 of 1,500
    b = q.next_batch(new_requests=1)
    assert b.requests == [0, 1] and b.finishing == [0, 1]  # the rest of 0 goes on, plus one new prompt
    assert q.next_batch(new_requests=0) is None
