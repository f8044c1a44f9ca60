"""Regression tests for the simulator's share of issue 14 (bad input, honest accounting) and the
healthy default of issue 15. Each names the defect it keeps fixed."""

import numpy as np
import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.sim.metrics import time_series
from cloudmatrix.sim.scenario import load_scenario
from cloudmatrix.sim.simulation import build_simulation, simulate
from cloudmatrix.sim.workload import read_trace

SMALL = """
name = "small"
system = "cloudmatrix384"
model = "deepseek-r1"
[prefill]
instances = 1
dies = 32
tokens_per_die = 1024
[decode]
instances = 1
dies = 32
batch_per_die = 8
[slo]
ttft = 2.0
tpot = 0.05
[workload]
kind = "poisson"
rate = 20.0
num_requests = 400
input_len = { kind = "uniform", lo = 256, hi = 2048 }
output_len = { kind = "uniform", lo = 2, hi = 64 }
"""


@pytest.fixture
def small(tmp_path):
    def make(text: str = SMALL, **overrides):
        path = tmp_path / "s.toml"
        path.write_text(text)
        return load_scenario(path, overrides)

    return make


def test_1_a_run_without_decode_steps_has_a_time_series():
    res = simulate(load_scenario("paper-prefill", {"duration": 20.0, "warmup": 5.0}))
    ts = time_series(res.records, end=res.end_time, output_events=res.output_events,
                     input_events=res.input_events, running_events=res.running_events)  # fmt: skip
    assert (ts.running == 0).all()
    assert res.summary["pools"]["decode"]["steps"] == 0


@pytest.mark.parametrize("duration,warmup", [(20.0, 5.0), (3.0, 0.0), (1e-3, 0.0)])
def test_3_utilisation_never_exceeds_one(small, duration, warmup):
    s = simulate(small(duration=duration, warmup=warmup)).summary
    for pool in s["pools"].values():
        assert 0 <= pool["utilisation"] <= 1 + 1e-12


def test_3_utilisation_is_measured_over_the_throughput_window(small):
    """Each step counts only its part inside [warmup, duration], the window throughput uses."""
    sim = build_simulation(small(duration=15.0, warmup=10.0))
    res = sim.run()
    for pool in ("prefill", "decode"):
        starts = np.asarray(sim.step_start[pool])
        ends = starts + np.asarray(sim.step_dt[pool])
        busy = np.clip(np.minimum(ends, 15.0) - np.maximum(starts, 10.0), 0, None).sum()
        assert res.summary["pools"][pool]["utilisation"] == pytest.approx(busy / 5.0)
        assert busy < np.sum(ends - starts)  # steps outside the window were left out


def test_4_latency_covers_the_window_arrivals_run_until_they_finish(small):
    res = simulate(small(duration=10.0, warmup=2.0))
    r = res.records
    arrived = (r.arrival >= 2.0) & (r.arrival <= 10.0)
    assert r.finished[arrived].all()  # the run drained them, even those finishing after 10 s
    assert (r.finish_time[arrived] > 10.0).any()
    assert res.summary["ttft_s"]["count"] == int(arrived.sum())
    assert "arrived in [2, 10] s" in res.summary["latency_population"]


@pytest.mark.parametrize("key", ["seed", "workload.seed", "experts.seed"])
def test_5_negative_seeds_are_refused(small, key):
    with pytest.raises(CloudMatrixError, match="seed"):
        small(**{key: -1})


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"workload.num_requests": 10_000_000_000}, "num_requests"),
        ({"workload.output_len": {"kind": "uniform", "lo": 1, "hi": 1e21}}, "output_len.hi"),
        ({"caching.enabled": True, "caching.capacity_gb": float("inf")}, "capacity_gb"),
    ],
)
def test_10_sizes_are_checked_before_allocating(small, overrides, match):
    with pytest.raises(CloudMatrixError, match=match):
        build_simulation(small(**overrides))


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"prefill.instances": True}, "prefill.instances"),
        ({"prefill.instances": "6"}, "prefill.instances"),
        ({"prefill.batch_per_die": 8}, "batch_per_die does nothing"),
        ({"decode.tokens_per_die": 8}, "tokens_per_die does nothing"),
        ({"decode.policy": "fcfs"}, "policy does nothing"),
        ({"kv_block_size": 1 << 23}, "kv_block_size"),
        ({"name.x": 1}, "not a section"),
    ],
)
def test_11_silent_acceptance_is_an_error(small, overrides, match):
    with pytest.raises(CloudMatrixError, match=match):
        build_simulation(small(**overrides))


def test_11_a_csv_trace_with_a_byte_order_mark_reads(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes("\ufeffarrival_time,input_len,output_len\n0.5,100,10\n".encode())
    w = read_trace(p)
    assert w.input_len.tolist() == [100] and w.arrival_time.tolist() == [0.5]


def test_default_scenario_meets_its_slos():
    s = simulate(load_scenario("default")).summary
    assert s["slo_attainment"] >= 0.9
    assert s["slo_verdict"].startswith("SLOs met")


def test_saturation_verdict_names_the_binding_metric():
    s = simulate(load_scenario("paper-saturation", {"duration": 60.0, "warmup": 20.0})).summary
    v = s["slo_verdict"]
    assert v.startswith("SLOs NOT met")
    # the binding metric is the one whose p90 is furthest past its limit
    ttft_ratio = s["ttft_s"]["p90"] / s["slo"]["ttft_s"]
    tpot_ratio = s["tpot_s"]["p90"] / s["slo"]["tpot_s"]
    binding = "TTFT" if ttft_ratio > tpot_ratio else "TPOT"
    assert f"binding: {binding} p90" in v and "over its" in v


def test_long_prefill_batches_leave_no_empty_throughput_bins():
    """paper-prefill batches run for seconds; each batch's tokens spread over its span."""
    res = simulate(load_scenario("paper-prefill", {"duration": 30.0, "warmup": 5.0}))
    starts, ends, _ = res.input_events
    assert np.median(ends - starts) > 1.0  # batches longer than a bin
    ts = time_series(res.records, bin_s=1.0, end=30.0, input_events=res.input_events,
                     output_events=res.output_events)  # fmt: skip
    busy = ts.t >= starts.min()
    assert (ts.input_tokens_per_s[busy] > 0).all()


def test_prefill_throughput_resolves_expert_balance(small):
    """Issue 9 item 3: a window shorter than a few batches still tells a slower step from a faster one."""
    text = SMALL.replace(
        'kind = "poisson"\nrate = 20.0\nnum_requests = 400', 'kind = "closed"\nconcurrency = 200\nnum_requests = 5000'
    )
    text = text.replace('output_len = { kind = "uniform", lo = 2, hi = 64 }', "output_len = 1")
    rates = {}
    for placement in ("none", "perfect"):
        extra = f'\n[experts]\npopularity = "zipf"\nzipf_s = 1.0\nplacement = "{placement}"\n'
        sc = small(text + extra, duration=12.0, warmup=4.0)
        rates[placement] = simulate(sc).summary["prefill_tokens_per_s_per_chip"]
    assert rates["perfect"] > rates["none"] * 1.02


def test_without_the_drain_the_run_stops_at_the_duration(small):
    res = build_simulation(small(duration=10.0, warmup=2.0)).run(drain=False)
    r = res.records
    assert np.nanmax(r.finish_time) <= 10.0
    arrived = (r.arrival >= 2.0) & (r.arrival <= 10.0)
    assert not r.finished[arrived].all()  # the figures then cover only those finished by 10 s
