"""The mixed step (a prompt chunk and a decode batch in one forward, perf/mixed.py) against the prefill and decode
steps it merges, and the colocated simulator costing a TensorRT-LLM mixed step with it."""

import pytest

from cloudmatrix.perf import Deployment, decode_step, prefill_step
from cloudmatrix.perf.deployment import precisions_for
from cloudmatrix.perf.mixed import mixed_step
from cloudmatrix.sim.costs import PoolCosts
from cloudmatrix.sim.scenario import ExpertsSpec, load_scenario
from cloudmatrix.sim.simulation import build_simulation
from cloudmatrix.specs.hardware import load_system
from cloudmatrix.specs.model import load_model
from sim.h200_colocated import h200_colocated  # tests/sim, on the path pytest gives the tests

R1 = load_model("deepseek-r1")
H200 = load_system("hgx-h200")
FP8 = precisions_for("fp8")
# (deployment, system): TP attention + EP MoE as TensorRT-LLM runs it, attention DP, MTP on B200, a GQA model
CASES = {
    "h200_tp8": (Deployment(dies=8, attn_tp=8, precision=FP8, backend="trtllm"), H200, R1),
    "h200_dp8": (Deployment(dies=8, precision=FP8, backend="trtllm"), H200, R1),
    "b200_tp8_mtp": (
        Deployment(dies=8, attn_tp=8, mtp_depth=1, mtp_acceptance=0.7, precision=FP8, backend="trtllm"),
        load_system("hgx-b200"),
        R1,
    ),
    "h200_qwen_dp8": (Deployment(dies=8, precision=FP8, backend="trtllm"), H200, load_model("qwen3-235b-a22b")),
}
# (prompt tokens per die, prompt length, decode sequences per die, decode context)
SHAPES = [(1024, 1024, 8, 2048), (256, 3000, 64, 3000), (4096, 4096, 32, 4096), (64, 1024, 96, 1500)]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("shape", SHAPES)
def test_one_forward_costs_less_than_the_two_steps_and_more_than_either(case, shape):
    dep, system, model = CASES[case]
    p, plen, d, ctx = shape
    pre = prefill_step(model, system, dep, p, plen, check_memory=False).step_time
    dec = decode_step(model, system, dep, d, ctx, check_memory=False).step_time
    mixed = mixed_step(model, system, dep, p, plen, d, ctx, check_memory=False)
    # a host-bound eager forward (the host issues the ops slower than the device runs them) costs its ops' host time,
    # which one forward pays once whatever it carries: then the mixed step equals the prefill step
    floor = pre if mixed.host_time >= mixed.step_time else max(pre, dec) * (1 + 1e-9)
    assert max(pre, dec) <= floor <= mixed.step_time < pre + dec


@pytest.mark.parametrize("case", CASES)
def test_with_no_decode_sequences_the_mixed_step_is_the_prefill_step(case):
    dep, system, model = CASES[case]
    pre = prefill_step(model, system, dep, 2048, 1536, check_memory=False)
    mixed = mixed_step(model, system, dep, 2048, 1536, 0, 4096, check_memory=False)
    assert mixed.step_time == pytest.approx(pre.step_time, rel=1e-12)
    assert mixed.host_time == pytest.approx(pre.host_time, rel=1e-12)


def test_attention_is_the_chunks_context_kernel_plus_the_decode_kernel():
    # the one op that splits by request kind: its FLOPs are the prefill step's plus the decode step's, while the
    # weights of every projection are read once (fewer HBM bytes than the two steps together)
    dep, system, model = CASES["h200_tp8"]
    pre = prefill_step(model, system, dep, 1024, 2048, check_memory=False)
    dec = decode_step(model, system, dep, 16, 3000, check_memory=False)
    mixed = mixed_step(model, system, dep, 1024, 2048, 16, 3000, check_memory=False)

    def row(b, name, group="moe_layer"):
        return next(r for r in b.rows if r.name == name and r.group == group)

    core = row(mixed, "attention_core")
    assert core.flops == pytest.approx(row(pre, "attention_core").flops + row(dec, "attention_core").flops, rel=1e-9)
    # o_proj: one GEMM over the chunk and the decode tokens (the decode step's sits in its fused epilog)
    o_mixed, o_pre = row(mixed, "o_proj"), row(pre, "o_proj")
    assert o_mixed.flops == pytest.approx(o_pre.flops * (1024 + 16) / 1024, rel=1e-9)
    assert o_mixed.bytes < o_pre.bytes * (1024 + 16) / 1024  # the weight is not read again for the decode rows
    assert mixed.serial_time < pre.serial_time + dec.serial_time


def test_the_host_dispatch_is_the_profiles_phase_passed_in():
    # the phase is a parameter (a stack may graph its mixed steps): a graphed phase pays one launch, not every op
    dep, system, model = CASES["h200_tp8"]
    eager = mixed_step(model, system, dep, 256, 1024, 32, 2048, host_phase="prefill", check_memory=False)
    graphed = mixed_step(model, system, dep, 256, 1024, 32, 2048, host_phase="decode", check_memory=False)
    assert graphed.host_time < eager.host_time / 100


def test_pool_costs_mixed_time_against_its_prefill_and_decode_times():
    dep, system, model = CASES["h200_dp8"]
    costs = PoolCosts(model, system, dep, ExpertsSpec(placement="none"))
    pre = costs.prefill_time(3000, 3000 * 3001 / 2, longest=3000)  # one prompt: on one attention-DP rank
    dec = costs.decode_time(12, 2500)
    mixed = costs.mixed_time(12, 2500, 3000, 3000 * 3001 / 2, longest=3000)
    assert max(pre, dec) < mixed < pre + dec
    # no decode sequences: the prefill time, busiest-rank pacing included
    assert costs.mixed_time(0, 0, 3000, 3000 * 3001 / 2, longest=3000) == pytest.approx(pre, rel=1e-12)
    assert costs.decode_time(12, 2500) == dec  # decode-only steps keep their own cost


WORKLOAD = """[workload]
kind = "closed"
concurrency = 8
num_requests = 24
input_len = { kind = "uniform", lo = 800, hi = 1024 }
output_len = { kind = "uniform", lo = 20, hi = 40 }
"""


def _coloc(backend: str) -> str:
    pool = {"instances": 1, "dies": 8, "ep": 8, "microbatches": 1, "shared_expert_dies": 0, "redundant_experts": 0,
            "tokens_per_die": 1024, "batch_per_die": 8, "backend": backend}  # fmt: skip
    return h200_colocated(**pool) + WORKLOAD


def _costed_steps(tmp_path, monkeypatch, backend):
    """Run a small colocated scenario; return (what each cost call returned, by method; every step's duration)."""
    calls: dict[str, list[float]] = {"decode_time": [], "prefill_time": [], "mixed_time": []}
    for name in calls:
        orig = getattr(PoolCosts, name)

        def wrapped(self, *a, _orig=orig, _name=name, **k):
            t = _orig(self, *a, **k)
            calls[_name].append(t)
            return t

        monkeypatch.setattr(PoolCosts, name, wrapped)
    (tmp_path / "s.toml").write_text(_coloc(backend))
    sim = build_simulation(load_scenario(tmp_path / "s.toml"))
    sim.run()
    return calls, list(sim.step_dt["colocated"])


def test_a_tensorrt_llm_colocated_step_with_a_chunk_and_decodes_is_costed_as_one_forward(tmp_path, monkeypatch):
    calls, steps = _costed_steps(tmp_path, monkeypatch, "trtllm")
    assert calls["mixed_time"]  # chunks joined decode steps
    costed = set(calls["decode_time"]) | set(calls["prefill_time"]) | set(calls["mixed_time"])
    assert all(dt in costed for dt in steps)  # no step adds a decode and a prefill cost (no cache reads here)
    assert set(calls["mixed_time"]) & set(steps)


def test_sglang_separate_prefill_never_costs_a_mixed_step(tmp_path, monkeypatch):
    calls, steps = _costed_steps(tmp_path, monkeypatch, "sglang")
    assert not calls["mixed_time"] and calls["prefill_time"] and calls["decode_time"]


def test_the_context_independent_ops_are_reused_without_changing_the_cost():
    from cloudmatrix.perf import mixed

    dep, system, model = CASES["b200_tp8_mtp"]
    mixed._SHAPE_OPS.clear()
    fresh = mixed_step(model, system, dep, 512, 2048, 24, 3000, check_memory=False).step_time
    shorter = mixed_step(model, system, dep, 512, 2048, 24, 1000, check_memory=False).step_time
    assert mixed._SHAPE_OPS  # the shape's ops were kept
    again = mixed_step(model, system, dep, 512, 2048, 24, 3000, check_memory=False).step_time
    assert again == fresh and shorter < fresh  # only the decode attention follows the context
