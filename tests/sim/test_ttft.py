"""TTFT as a client measures it: front end, prefill queue and compute, P->D KV transfer, decode-slot wait.

Each test runs a request at low load and checks that its TTFT rises above the pure prefill
compute by exactly the costed amount of one component.
"""

import math

import numpy as np
import pytest

from cloudmatrix.perf import comm, prefill_step
from cloudmatrix.sim.results import ttft_components
from cloudmatrix.sim.scenario import load_scenario
from cloudmatrix.sim.simulation import build_simulation

ONE = """
name = "one"
system = "cloudmatrix384"
model = "deepseek-r1"
[prefill]
instances = 1
dies = 32
tokens_per_die = 4096
[decode]
instances = 1
dies = 32
batch_per_die = 4
[workload]
kind = "poisson"
rate = 0.5
num_requests = 3
input_len = 4096
output_len = 8
"""


@pytest.fixture
def scenario(tmp_path):
    def make(text: str = ONE, **overrides):
        path = tmp_path / "s.toml"
        path.write_text(text)
        return load_scenario(path, overrides)

    return make


NO_FRONT_END = {"frontend.tokenize_s_per_token": 0.0, "frontend.request_s": 0.0, "frontend.detokenize_s": 0.0}


def run(sc):
    sim = build_simulation(sc)
    res = sim.run()
    return sim, res


def test_components_sum_to_ttft(scenario):
    sim, res = run(scenario())
    parts = ttft_components(sim)
    total = sum(parts.values())
    assert np.allclose(total, res.records.ttft, rtol=0, atol=1e-12)
    assert set(res.summary["ttft_components_s"]) == set(parts)


def test_front_end_adds_tokenise_request_and_detokenise(scenario):
    sc = scenario()
    _, with_fe = run(sc)
    _, without = run(scenario(**NO_FRONT_END))
    fe = sc.frontend
    expected = fe.request_s + fe.tokenize_s_per_token * 4096 + fe.detokenize_s
    assert expected > 0
    # the requests arrive seconds apart, so nothing else changes: the rise is exactly the front end
    assert np.allclose(with_fe.records.ttft - without.records.ttft, expected, rtol=1e-9)
    assert with_fe.summary["ttft_components_s"]["front_end"]["mean"] == pytest.approx(expected)


def test_kv_transfer_is_the_rdma_time_of_the_prompt_kv(scenario):
    sim, res = run(scenario(**NO_FRONT_END))
    nbytes = 4096 * sim.kv_bytes_per_token
    out = sim.system.spec.scale_out
    expected = comm.transfer(out, comm.die_bandwidth(sim.system, out), nbytes)
    r = res.records
    compute = sim.prefill_end - sim.prefill_start
    # at low load nothing queues: TTFT = prefill compute + KV transfer, and the transfer is costed
    assert np.allclose(r.ttft - compute, expected, rtol=1e-9)
    assert res.summary["ttft_components_s"]["kv_transfer"]["p50"] == pytest.approx(expected)
    assert expected > 1e-4  # half a GB of bf16 MLA KV for 4K tokens is not free


def test_a_lone_prompt_runs_on_one_dp_rank(scenario):
    sim, res = run(scenario(**NO_FRONT_END))
    compute = sim.prefill_end - sim.prefill_start
    cost = sim.costs["prefill"]
    lone = cost.prefill_time(4096, 4096 * 4097 / 2, longest=4096)
    spread = cost.prefill_time(4096, 4096 * 4097 / 2)
    assert np.allclose(compute, lone)
    # attention and the dense layers of 4,096 tokens on one die, not 128 tokens on each of 32
    assert lone > 2 * spread
    # and it is cheaper than every die holding 4,096 tokens (the experts see only the one prompt)
    system, model = sim.sc.check()
    full = prefill_step(model, system, cost.dep.with_(imbalance=cost.imbalance(128)), 4096, 4096, check_memory=False)
    assert lone < full.step_time


def test_a_batch_that_fills_every_rank_costs_the_plain_prefill_step(scenario):
    sim, _ = run(scenario(**NO_FRONT_END))
    cost = sim.costs["prefill"]
    tokens = 4096 * 32  # one 4K prompt per die
    t = cost.prefill_time(tokens, 32 * 4096 * 4097 / 2, longest=4096)
    step = prefill_step(
        cost.model, cost.system, cost.dep.with_(imbalance=cost.imbalance(4096)), 4096, 4096, check_memory=False
    )
    assert t == pytest.approx(step.step_time, rel=1e-12)


SLOTS = ONE.replace("batch_per_die = 4", "batch_per_die = 1").replace(
    'kind = "poisson"\nrate = 0.5\nnum_requests = 3\ninput_len = 4096\noutput_len = 8',
    'kind = "closed"\nconcurrency = 40\nnum_requests = 40\ninput_len = 512\noutput_len = 64',
)


def test_decode_slot_wait_is_the_time_until_a_slot_frees(scenario):
    sim, res = run(scenario(SLOTS, **NO_FRONT_END))
    r = res.records
    parts = ttft_components(sim)
    wait = parts["decode_slot_wait"]
    waited = wait > 0
    # continuous batching admits at step boundaries: a request whose KV lands mid-step waits for the step
    starts = np.asarray(sim.step_start["decode"])
    step_ends = starts + np.asarray(sim.step_dt["decode"])
    for k in np.flatnonzero(waited):
        assert np.any(np.isclose(np.append(starts, step_ends), sim.admitted[k], rtol=0, atol=1e-12))
        assert sim.admitted[k] > sim.kv_ready[k]
    # 32 slots, 40 requests at once: the last 8 admitted wait until an earlier request finishes
    late = np.argsort(sim.admitted, kind="stable")[32:]
    assert late.size == 8
    for k in late:
        assert np.any(np.isclose(r.finish_time, sim.admitted[k], rtol=0, atol=1e-12))
    assert wait[late].min() > 1.0  # a whole 64-token decode, seconds, not a step
    # its TTFT rises above prefill compute + transfer by exactly that wait
    rest = parts["prefill_queue"] + parts["prefill"] + parts["kv_transfer"]
    assert np.allclose(r.ttft[waited] - rest[waited], wait[waited], rtol=0, atol=1e-12)
    assert res.summary["ttft_components_s"]["decode_slot_wait"]["mean"] > 0
    assert math.isfinite(res.summary["ttft_components_s"]["decode_slot_wait"]["p50"])
