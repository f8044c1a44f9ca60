"""When a disaggregated request's first token reaches its client, per serving stack, and decode steps
costed per attention-DP rank (a TP group shares its sequences)."""

import numpy as np
import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf import decode_step
from cloudmatrix.sim.scenario import Scenario
from cloudmatrix.sim.simulation import build_simulation

from .h200_disagg import h200_disagg


def scenario(backend: str | None, attn_tp: int = 1, batch_per_die: int = 2) -> Scenario:
    return h200_disagg(
        backend, name="handoff", nodes=2, decode={"batch_per_die": batch_per_die, "attn_tp": attn_tp},
        workload={"concurrency": 4, "num_requests": 12, "output_len": {"kind": "uniform", "lo": 4, "hi": 40}},
    )


def first_step_of(sim, r):
    """(start, duration) of the first decode step that began once request r had a slot and its KV."""
    start = np.frombuffer(sim.step_start["decode"], dtype=np.float64)
    dt = np.frombuffer(sim.step_dt["decode"], dtype=np.float64)
    i = int(np.flatnonzero(start >= max(sim.admitted[r], sim.kv_ready[r]))[0])
    return start[i], dt[i]


@pytest.mark.parametrize("backend", ["trtllm", "sglang", None])
def test_first_token_leaves_with_the_stacks_first_decode_output(backend):
    sim = build_simulation(scenario(backend))
    sim.run()
    pulls = backend == "trtllm"
    assert sim.handoff.first_token_after_step == pulls and sim.handoff.pull_after_admission == pulls
    for r in range(sim.n):
        # TensorRT-LLM admits first, then pulls the KV: it arrives after the slot is taken; SGLang the reverse
        assert (sim.kv_ready[r] > sim.admitted[r]) if pulls else (sim.kv_ready[r] <= sim.admitted[r])
        start, dt = first_step_of(sim, r)
        # TensorRT-LLM streams the context's token with the first generation step after the KV transfer;
        # SGLang streams it from the prebuilt batch, as soon as a slot takes the request
        expected = start + dt if pulls else start
        assert sim.first_token[r] == pytest.approx(expected + sim.egress, abs=1e-12)
    assert np.all(sim.finish >= sim.first_token)


def test_a_pulled_request_sits_out_the_steps_before_its_kv_lands():
    sim = build_simulation(scenario("trtllm"))
    sim.run()
    start = np.frombuffer(sim.step_start["decode"], dtype=np.float64)
    dt = np.frombuffer(sim.step_dt["decode"], dtype=np.float64)
    end = start + dt
    for r in range(sim.n):
        first, _ = first_step_of(sim, r)
        # one token a step (no MTP), from the first step that starts once its KV is there to the step it
        # finishes in: a step that ran while its KV was arriving gave it nothing
        steps = np.count_nonzero((start >= first) & (end <= sim.finish[r] - sim.egress + 1e-12))
        assert steps == sim.wl.output_len[r] - 1
    assert np.any(sim.kv_ready > sim.admitted)  # the case exists: admitted, then pulled


def test_decode_step_is_costed_at_the_ranks_sequences_over_its_tp_dies():
    # one TP8 rank of 8 dies: its sequences are shared by the 8 dies (perf counts them per die)
    sim = build_simulation(scenario(None, attn_tp=8, batch_per_die=1))
    d, cost = sim.decoders[0], sim.costs["decode"]
    assert d.dies == 1 and d.tp == 8 and d.max_seqs == 8  # one rank holding the instance's 8 slots
    admitted = 0
    for seqs in (1, 3, 8):
        for r in range(admitted, seqs):
            d.enqueue(r, 1024, 5, 0.0)
        admitted += d.admit()
        share, ctx = d.busiest_die()
        assert share == seqs / 8 and ctx == 1024
        dep = cost.dep.with_(imbalance=cost.imbalance(seqs / 8))
        per_die = decode_step(sim.model, sim.system, dep, seqs / 8, 1024, check_memory=False).step_time
        assert cost.decode_time(share, ctx) == pytest.approx(per_die, rel=1e-12)
    # one sequence on the TP8 group is cheaper than one per die (eight sequences' reads)
    assert cost.decode_time(1 / 8, 1024) < cost.decode_time(1, 1024)


def test_attention_dp_ranks_are_dies():
    sim = build_simulation(scenario(None, attn_tp=1, batch_per_die=2))
    d = sim.decoders[0]
    assert d.dies == 8 and d.tp == 1 and d.max_seqs == 16


def prefill_scenario(backend: str, tokens_per_die: int = 96) -> Scenario:
    sc = scenario(backend)
    data = sc.model_dump(exclude_unset=True)
    data["prefill"]["tokens_per_die"] = tokens_per_die  # 768 tokens a step over 8 dies
    data["workload"]["input_len"] = {"kind": "uniform", "lo": 300, "hi": 512}
    return Scenario.model_validate(data)


def prompts_split_over_steps(sim) -> int:
    """Requests whose prefill did not start and end in the same step."""
    start = np.frombuffer(sim.step_start["prefill"], dtype=np.float64)
    dt = np.frombuffer(sim.step_dt["prefill"], dtype=np.float64)
    ends = dict(zip(start.tolist(), (start + dt).tolist(), strict=True))
    return sum(1 for r in range(sim.n) if ends[sim.prefill_start[r]] != sim.prefill_end[r])


def test_tensorrt_llm_prefill_runs_whole_prompts_sglang_chunks():
    whole = build_simulation(prefill_scenario("trtllm"))
    whole.run()
    assert prompts_split_over_steps(whole) == 0
    chunked = build_simulation(prefill_scenario("sglang"))
    chunked.run()
    assert prompts_split_over_steps(chunked) > 0


def test_whole_prompts_longer_than_a_step_are_refused():
    with pytest.raises(CloudMatrixError, match="runs whole prompts"):
        build_simulation(prefill_scenario("trtllm", tokens_per_die=32))


def test_batch_per_rank_sets_exact_slots_per_rank():
    data = scenario("trtllm", attn_tp=8, batch_per_die=2).model_dump(exclude_unset=True)
    data["decode"]["batch_per_rank"] = 9  # a TP8 rank holding 9 sequences: not 8 x batch_per_die
    sim = build_simulation(Scenario.model_validate(data))
    assert [d.max_seqs for d in sim.decoders] == [9]
    data["decode"]["batch_per_rank"] = 17  # more than batch_per_die = 2 per die sized memory for
    with pytest.raises(CloudMatrixError, match="batch_per_rank = 17 needs batch_per_die >= 3"):
        build_simulation(Scenario.model_validate(data))


def test_tensorrt_llm_disaggregated_rows_decode_at_their_batch_per_rank():
    pytest.importorskip("aiconfigurator_core", reason="the measured rows ship with the validate extra")
    from cloudmatrix.validate.silicon_csv import load_silicon_set
    from cloudmatrix.validate.silicon_translate import translate
    from cloudmatrix.validate.silicon_trtllm_recipes import trtllm_pd_recipe

    # rows without a known launch recipe keep the row's batch (aiconfigurator's convention); those with one run the
    # recipe's generation max_batch_size (tests/validate/test_silicon_trtllm_recipes.py)
    rows = [
        m for m in load_silicon_set().measurements
        if m.row.mode == "disagg" and m.row.backend == "trtllm" and m.row.decode.batch and m.row.decode.tp == 8
        and m.row.decode.batch % 8 and m.row.system == "gb200" and trtllm_pd_recipe(m.row) is None
    ]  # fmt: skip
    assert rows
    m = rows[0]
    sc = translate(m).scenario
    assert sc.decode.batch_per_rank == m.row.decode.batch
    ranks = sc.decode.dies // sc.decode.attn_tp
    assert sc.decode.batch_per_die * sc.decode.dies != m.row.decode.batch * ranks  # the case it exists for


def test_ttft_parts_of_pulled_requests_are_nonnegative_and_sum_to_ttft():
    from cloudmatrix.sim.results import ttft_components

    sim = build_simulation(scenario("trtllm"))
    res = sim.run()
    parts = ttft_components(sim)
    assert np.allclose(sum(parts.values()), res.records.ttft, rtol=0, atol=1e-12)
    for name, v in parts.items():
        assert np.all(v >= -1e-12), name
    # the transfer is the pull after admission, not the wait for the slot
    assert np.allclose(parts["kv_transfer"], sim._pull_s, rtol=1e-12)
