"""The simulation runtime: conservation, closed loops, the caching pool, determinism, bad scenarios."""

import numpy as np
import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.sim.scenario import load_scenario
from cloudmatrix.sim.simulation import Simulation, simulate

SMALL = """
name = "small"
system = "cloudmatrix384"
model = "deepseek-r1"
mode = "disaggregated"
[prefill]
instances = 2
dies = 32
tokens_per_die = 1024
[decode]
instances = 1
dies = 32
batch_per_die = 16
[mtp]
depth = 1
acceptance = 0.7
[workload]
kind = "poisson"
rate = 40.0
num_requests = 300
input_len = { kind = "uniform", lo = 256, hi = 2048 }
output_len = { kind = "uniform", lo = 2, hi = 96 }
seed = 3
"""


@pytest.fixture
def small(tmp_path):
    def make(extra: str = "", **overrides):
        path = tmp_path / "small.toml"
        path.write_text(SMALL + extra)
        return load_scenario(path, overrides)

    return make


def test_every_request_finishes_and_tokens_are_conserved(small):
    res = simulate(small())
    r = res.records
    assert r.finished.all()
    assert res.output_events[-1].sum() == r.output_len.sum()
    assert res.input_events[-1].sum() == r.input_len.sum()
    assert (r.first_token_time >= r.arrival).all()
    assert (r.finish_time >= r.first_token_time).all()
    multi = r.output_len > 1
    assert (r.tpot[multi] > 0).all()


def test_a_horizon_leaves_requests_in_flight_but_none_lost(small):
    res = simulate(small(duration=2.0))
    s = res.summary["requests"]
    finished = int((res.records.finish_time <= res.end_time).sum())
    assert finished + s["in_flight_at_end"] + s["never_issued"] == 300
    assert s["in_flight_at_end"] > 0


def test_littles_law_holds_for_the_decode_pool(small):
    """Time-averaged decode batch = finished-in-decode rate x mean decode residence (requests that decode)."""
    res = simulate(small(**{"workload.num_requests": 600}))
    r = res.records
    t, n = res.running_events
    end = r.finish_time.max()
    area = np.sum(n * np.diff(np.append(t, end)))  # integral of the decode batch over time
    # each decoding request sits in a slot from admission to finish; its steps run back to back, so
    # the batch integral equals the summed residence, which is at least the sum of (finish - first token)
    # minus the transfer and admission waits; bound it both ways
    decoding = r.output_len > 1
    residence_upper = np.sum(r.finish_time[decoding] - r.first_token_time[decoding])
    assert 0.5 * residence_upper < area <= residence_upper * 1.0001


def test_closed_loop_keeps_exactly_the_client_count_in_the_system(small):
    sc = small()
    sc = sc.model_copy(
        update={
            "workload": sc.workload.model_copy(
                update={"kind": "closed", "rate": None, "concurrency": 20, "num_requests": 200}
            )
        }
    )
    res = simulate(sc)
    r = res.records
    assert r.finished.all()
    # sample the number of requests in the system at many instants
    ts = np.linspace(0, r.finish_time.max() * 0.999, 400)
    in_system = ((r.arrival[None, :] <= ts[:, None]) & (r.finish_time[None, :] > ts[:, None])).sum(axis=1)
    assert in_system.max() <= 20
    # while requests remain to be issued, every client has one outstanding
    last_issue = r.arrival.max()
    assert (in_system[ts < last_issue] == 20).all()
    # each issue after time 0 coincides with a finish
    later = r.arrival[r.arrival > 0]
    assert np.isin(later, r.finish_time).all()


PREFIX = """
[caching]
enabled = true
block_size = 128
"""


def test_cache_hit_rate_matches_reuse_when_ample_and_falls_when_not(small, tmp_path):
    text = SMALL.replace('input_len = { kind = "uniform", lo = 256, hi = 2048 }', "input_len = 4096")
    text = text.replace("rate = 40.0", "rate = 2.0").replace("num_requests = 300", "num_requests = 120")
    text = text.replace("seed = 3", "seed = 3\nprefix = { groups = 4, prefix_len = 2048 }")
    path = tmp_path / "prefix.toml"
    path.write_text(text + PREFIX)
    ample = simulate(load_scenario(path)).summary["cache"]
    # reuse of the workload: every request after the first of its group finds its group's 2,048-token prefix
    sim = Simulation(load_scenario(path))
    groups = sim.wl.prefix_group
    firsts = len(np.unique(groups))
    expected = (len(groups) - firsts) * 2048 / (len(groups) * 4096)
    assert ample["hit_rate"] == pytest.approx(expected, abs=0.02)
    # a pool that holds fewer blocks than one prompt evicts the shared prefixes before they are reused
    tiny = simulate(load_scenario(path, {"caching.capacity_gb": 0.2})).summary["cache"]
    assert tiny["hit_rate"] < ample["hit_rate"] / 2


def test_cache_hits_skip_prefill_compute(small, tmp_path):
    text = SMALL.replace('input_len = { kind = "uniform", lo = 256, hi = 2048 }', "input_len = 4096")
    text = text.replace("seed = 3", "seed = 3\nprefix = { groups = 1, prefix_len = 3072 }")
    path = tmp_path / "p.toml"
    path.write_text(text)
    off = simulate(load_scenario(path)).summary
    path.write_text(text + PREFIX)
    on = simulate(load_scenario(path)).summary
    assert on["ttft_s"]["mean"] < off["ttft_s"]["mean"]


def test_same_seed_same_numbers_other_seed_other_numbers(small):
    a = simulate(small()).records.finish_time
    b = simulate(small()).records.finish_time
    c = simulate(small(seed=99)).records.finish_time
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_colocated_mode_conserves_tokens(small, tmp_path):
    text = SMALL.replace('mode = "disaggregated"', 'mode = "colocated"')
    text = text.replace(
        "[prefill]\ninstances = 2\ndies = 32\ntokens_per_die = 1024\n[decode]\ninstances = 1\ndies = 32\n"
        "batch_per_die = 16",
        "[colocated]\ninstances = 2\ndies = 32\nbatch_per_die = 16\ntokens_per_die = 256",
    )
    path = tmp_path / "colo.toml"
    path.write_text(text)
    res = simulate(load_scenario(path))
    assert res.records.finished.all()
    assert res.output_events[-1].sum() == res.records.output_len.sum()


def test_zipf_experts_without_eplb_are_more_imbalanced(small, tmp_path):
    path = tmp_path / "z.toml"
    imb = {}
    for mode in ("none", "eplb"):
        path.write_text(SMALL + f'\n[experts]\npopularity = "zipf"\nzipf_s = 1.0\nplacement = "{mode}"\n')
        sim = Simulation(load_scenario(path))
        imb[mode] = sim.costs["prefill"].imbalance(1024)
    assert imb["eplb"] < imb["none"]


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"decode.bogus": 1}, "unknown key 'decode.bogus'"),
        ({"decode.dies": 800}, "has 768"),
        ({"decode.redundant_experts": 3}, "do not divide evenly"),
        ({"decode.batch_per_die": 900}, "does not fit"),
        ({"mode": "colocated"}, "needs a \\[colocated\\] section"),
    ],
)
def test_bad_scenarios_fail_before_simulating(small, overrides, match):
    with pytest.raises(CloudMatrixError, match=match):
        Simulation(small(**overrides))


def test_cache_reads_over_vpc_are_slower_than_over_ub(tmp_path):
    text = SMALL.replace('input_len = { kind = "uniform", lo = 256, hi = 2048 }', "input_len = 4096")
    text = text.replace("seed = 3", "seed = 3\nprefix = { groups = 1, prefix_len = 3968 }")
    path = tmp_path / "v.toml"
    ttft = {}
    for plane in ("scale-up", "vpc"):
        path.write_text(text + PREFIX + f'plane = "{plane}"\n')
        ttft[plane] = simulate(load_scenario(path)).summary["ttft_s"]["mean"]
    assert ttft["vpc"] > ttft["scale-up"]


def test_saturated_decode_pool_reports_a_full_batch(small):
    sc = small(duration=40.0, warmup=20.0)
    sc = sc.model_copy(
        update={
            "workload": sc.workload.model_copy(
                update={"kind": "closed", "rate": None, "concurrency": 2000, "num_requests": 20000}
            ),
            # enough prefill capacity that the decode pool, not prefill, is the bottleneck (4 instances were until
            # the 910C's prefill attention came from the A3 table, 2x slower at these short prompts: 13.6 per die)
            "prefill": sc.prefill.model_copy(update={"instances": 8}),
        }
    )
    pools = simulate(sc).summary["pools"]
    assert pools["decode"]["mean_batch_per_die"] == pytest.approx(16, rel=0.05)
    assert pools["decode"]["mean_batch_per_die"] <= 16


def test_saturated_decode_throughput_agrees_with_the_step_model(small):
    """Two routes to one number: the simulator's measured decode rate and the cost model's step at the
    same batch and mean context (constant lengths, so every die holds the same load)."""
    from cloudmatrix.perf import decode_step

    sc = small(duration=30.0, warmup=15.0)
    sc = sc.model_copy(
        update={
            "workload": sc.workload.model_copy(
                update={
                    "kind": "closed",
                    "rate": None,
                    "concurrency": 2000,
                    "num_requests": 40000,
                    "input_len": sc.workload.input_len.model_copy(
                        update={"kind": "constant", "value": 1024, "lo": None, "hi": None}
                    ),
                    "output_len": sc.workload.output_len.model_copy(
                        update={"kind": "constant", "value": 129, "lo": None, "hi": None}
                    ),
                }
            )
        }
    )
    summary = simulate(sc).summary
    system, model = sc.check()
    dep = sc.deployment(sc.decode, model)
    # mean context while decoding: the prompt + 1 plus half the 128 generated tokens
    step = decode_step(model, system, dep, 16, 1024 + 1 + 64)
    assert summary["decode_tokens_per_s_per_chip"] == pytest.approx(step.tokens_per_s_per_chip, rel=0.05)


def test_shortest_prompt_first_lowers_mean_ttft_under_load(small):
    ttft = {}
    for policy in ("fcfs", "shortest"):
        # one instance, small batches and arrivals faster than it can prefill: a queue builds up
        sc = small(
            **{"prefill.policy": policy, "prefill.instances": 1, "prefill.tokens_per_die": 64, "workload.rate": 200.0}
        )
        r = simulate(sc).records
        longest = r.input_len >= np.percentile(r.input_len, 90)
        ttft[policy] = (np.nanmean(r.ttft), np.nanmean(r.ttft[longest]))
    assert ttft["shortest"][0] < 0.9 * ttft["fcfs"][0]
    assert ttft["shortest"][1] > ttft["fcfs"][1]  # the longest prompts pay for it


@pytest.mark.parametrize("depth,acceptance", [(1, 0.7), (2, 0.7), (2, 1.0), (3, 0.999999)])
def test_mtp_tokens_per_step_follow_the_acceptance(small, depth, acceptance):
    """Drafts are accepted in order until the first rejection: E[tokens] = sum_k a^k, k = 0..depth."""
    sim = Simulation(small(**{"mtp.depth": depth, "mtp.acceptance": acceptance}))
    draws = np.concatenate([sim._tokens_per_seq(20_000) for _ in range(5)])
    assert draws.dtype.kind in "iu" and draws.min() >= 1 and draws.max() <= 1 + depth
    expected = sum(acceptance**k for k in range(depth + 1))
    assert draws.mean() == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("n", [512, 515])  # whole 64-bit words (the fast draw) and not
def test_mtp_draws_are_the_generators_byte_stream(small, n):
    """The per-slot draws are rng.bytes of the scenario's seed, however they are produced, so a run's
    figures do not depend on how the draw is implemented."""
    sim = Simulation(small(**{"mtp.depth": 2, "mtp.acceptance": 0.6}))
    ref = np.random.default_rng(sim.sc.seed)
    threshold = round(0.6 * 65536)
    for _ in range(3):
        u = np.frombuffer(ref.bytes(2 * n * 2), dtype=np.uint16).reshape(n, 2) < threshold
        expected = 1 + u[:, 0] + (u[:, 0] & u[:, 1])
        assert np.array_equal(sim._tokens_per_seq(n), expected)


def _check_decode_state(d):
    """The packed live entries agree with the slots, dies, queues and KV they stand for."""
    n = d.running
    slots = d.slot_of[:n]
    assert len(set(slots.tolist())) == n
    assert np.array_equal(d.die_of[:n], slots // d.per_die)
    assert np.array_equal(d.die_count, np.bincount(d.die_of[:n], minlength=d.dies))
    assert d.context_sum == int(d.context[:n].sum())
    assert (d.remaining[:n] > 0).all()  # a finished sequence never stays live
    # every slot is either live or on its own die's free list, never both
    for die, free in enumerate(d._free_by_die):
        live = set(slots[d.die_of[:n] == die].tolist())
        assert live.isdisjoint(free) and live | set(free) == set(range(die * d.per_die, (die + 1) * d.per_die))
    # KV was reserved up front for the whole request: context + remaining does not change while it decodes
    held = d.kv.held(d.req[:n])
    assert np.array_equal(held, d.kv.blocks_for(d.context[:n] + d.remaining[:n]))
    occupied, ids = d.slots()
    assert (np.diff(occupied) > 0).all() and sorted(ids.tolist()) == sorted(d.req[:n].tolist())


@pytest.mark.parametrize("mode", ["disaggregated", "colocated"])
def test_decode_state_stays_consistent_mid_run(small, tmp_path, mode):
    """Stopped at several instants with sequences live, finishing and waiting, the decode instances'
    packed state is consistent; and the same run stopped there twice is identical."""
    path = tmp_path / "s.toml"
    path.write_text(SMALL.replace('mode = "disaggregated"', f'mode = "{mode}"').replace("rate = 40.0", "rate = 120.0"))
    if mode == "colocated":
        text = path.read_text().replace("[prefill]\ninstances = 2\ndies = 32\ntokens_per_die = 1024\n", "")
        path.write_text(text.replace("[decode]", "[colocated]\ntokens_per_die = 256"))
    checked = 0
    for horizon in (0.7, 1.9, 3.1):
        a, b = (Simulation(load_scenario(path, {"duration": horizon})) for _ in range(2))
        ra, rb = a.run(drain=False), b.run(drain=False)
        for d in a.decoders:
            _check_decode_state(d)
            checked += d.running
        assert np.array_equal(ra.records.finish_time, rb.records.finish_time, equal_nan=True)
        assert np.array_equal(ra.records.max_itl, rb.records.max_itl, equal_nan=True)
    assert checked > 0  # the check saw live sequences


def test_a_freed_slot_is_reused_first_on_the_least_loaded_die():
    from cloudmatrix.serving.decode_scheduler import DecodeInstance
    from cloudmatrix.serving.kv_blocks import KVBlockManager

    d = DecodeInstance(8, KVBlockManager(1000, 16), dies=2)
    for r, out in enumerate((1, 5, 5, 5, 5)):
        d.enqueue(r, 10, out, 0.0)
    d.admit()
    # dies fill alternately from their lowest slot: request 0 on die 0 slot 0, 1 on die 1 slot 4, ...
    assert dict(zip(d.req[:5].tolist(), d.slot_of[:5].tolist(), strict=True)) == {0: 0, 1: 4, 2: 1, 3: 5, 4: 2}
    total, finished, _ = d.complete_step(np.ones(8, dtype=np.int64), 1.0)
    assert total == 5 and finished.tolist() == [0]
    _check_decode_state(d)
    d.enqueue(9, 10, 5, 1.0)
    assert d.admit() == 1
    assert d.req[d.running - 1] == 9 and d.slot_of[d.running - 1] == 0  # die 0 had fewer; its freed slot first
    _check_decode_state(d)
