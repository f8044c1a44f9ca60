"""Property-based: mutated shipped scenarios either run to finite, in-range figures or fail with one
line of CloudMatrixError (issue 14). A bounded number of examples in CI; more with
CLOUDMATRIX_FUZZ_EXAMPLES=500."""

import math
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.sim.scenario import load_scenario, scenario_names
from cloudmatrix.sim.simulation import simulate

RAN: list[str] = []
EXAMPLES = int(os.environ.get("CLOUDMATRIX_FUZZ_EXAMPLES", "20"))

odd_numbers = st.one_of(
    st.integers(1, 64),
    st.floats(0.01, 50.0),
    st.integers(-3, 3),
    st.integers(min_value=10**6, max_value=10**22),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["6", "", "[/x]", "fcfs"]),
)
KEYS = [
    "seed", "warmup", "duration", "kv_block_size", "prefill.instances", "prefill.tokens_per_die",
    "decode.batch_per_die", "decode.dies", "mtp.depth", "mtp.acceptance", "experts.seed", "workload.seed",
    "workload.concurrency", "workload.rate", "caching.capacity_gb", "slo.ttft", "frontend.request_s",
    "prefill.batch_per_die", "decode.policy", "name.x",
]  # fmt: skip


@st.composite
def mutations(draw):
    name = draw(st.sampled_from(scenario_names()))
    keys = draw(st.lists(st.sampled_from(KEYS), max_size=2, unique=True))
    overrides = {k: draw(odd_numbers) for k in keys}
    return name, overrides


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations())
def test_mutated_scenarios_run_in_range_or_fail_in_one_line(case):
    name, overrides = case
    # keep every run short: few requests, a short horizon
    base = load_scenario(name)
    small = {"workload.num_requests": 300} if base.workload.num_requests is not None else {}
    short = {"duration": 8.0, "warmup": 2.0}
    try:
        res = simulate(load_scenario(name, {**small, **short, **overrides}))
    except CloudMatrixError as e:
        assert "\n" not in str(e) and str(e)
        return
    RAN.append(name)
    s = res.summary
    for pool in s["pools"].values():
        assert 0 <= pool["utilisation"] <= 1 + 1e-9
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        v = s[key]
        if v["count"]:
            assert v["p50"] <= v["p90"] + 1e-12 <= v["p99"] + 2e-12
            assert v["p50"] >= 0
    assert math.isfinite(s["output_tokens_per_s"]) and s["output_tokens_per_s"] >= 0
    r = res.records
    done_by_end = int((r.finish_time <= res.end_time).sum())
    req = s["requests"]
    assert done_by_end + req["in_flight_at_end"] + req["never_issued"] == len(r)
    assert np.all(r.first_token_time[r.finished] <= r.finish_time[r.finished])
