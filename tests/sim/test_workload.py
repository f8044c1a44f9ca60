import numpy as np
import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.sim.workload import (
    LengthSpec,
    RequestTable,
    WorkloadSpec,
    gamma_arrivals,
    poisson_arrivals,
    read_trace,
    write_trace,
)


def _spec(**kw) -> WorkloadSpec:
    base = {"kind": "poisson", "rate": 5.0, "num_requests": 200, "input_len": 100, "output_len": 10}
    return WorkloadSpec.from_dict(base | kw)


def test_poisson_mean_gap_and_cv():
    t = poisson_arrivals(20.0, np.random.default_rng(0), n=50_000)
    gaps = np.diff(t)
    assert gaps.mean() == pytest.approx(1 / 20.0, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.03)
    assert (gaps >= 0).all()


def test_gamma_burstiness_and_duration():
    t = gamma_arrivals(10.0, 3.0, np.random.default_rng(1), n=50_000)
    gaps = np.diff(t)
    assert gaps.mean() == pytest.approx(0.1, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.1)
    d = gamma_arrivals(10.0, 0.5, np.random.default_rng(1), duration=500.0)
    assert d.max() < 500.0 and d.size == pytest.approx(5000, rel=0.05)


def test_seeds_are_deterministic_and_streams_independent():
    a, b = _spec(seed=3).build(), _spec(seed=3).build()
    assert np.array_equal(a.arrival_time, b.arrival_time)
    c = _spec(seed=4).build()
    assert not np.array_equal(a.arrival_time, c.arrival_time)
    # Changing only the length distribution keeps the arrivals.
    d = _spec(seed=3, input_len={"kind": "uniform", "lo": 10, "hi": 20}).build()
    assert np.array_equal(a.arrival_time, d.arrival_time)
    assert d.input_len.min() >= 10 and d.input_len.max() <= 20


def test_lognormal_mean_cv_and_truncation():
    rng = np.random.default_rng(0)
    x = LengthSpec(kind="lognormal", mean=1000, cv=0.5).sample(100_000, rng)
    assert x.mean() == pytest.approx(1000, rel=0.02)
    assert x.std() / x.mean() == pytest.approx(0.5, rel=0.05)
    y = LengthSpec(kind="lognormal", mean=1000, sigma=1.0, min=500, max=2000).sample(20_000, rng)
    assert y.min() >= 500 and y.max() <= 2000
    assert (y == 500).mean() < 0.01  # redrawn, not clamped onto the bound
    with pytest.raises(ValueError, match="lies in"):
        LengthSpec(kind="lognormal", mean=100, sigma=0.1, min=10_000)


def test_closed_loop_and_bare_int_lengths():
    w = WorkloadSpec.from_dict(
        {"kind": "closed", "concurrency": 8, "num_requests": 50, "input_len": 64, "output_len": 4}
    ).build()
    assert w.closed_loop and w.concurrency == 8 and len(w) == 50
    assert np.isnan(w.arrival_time).all()
    assert (w.input_len == 64).all() and (w.output_len == 4).all()


def test_prefix_groups_and_block_hashes():
    prefix = {"groups": 3, "prefix_len": 300, "popularity": "zipf", "s": 1.0, "fraction": 0.5}
    w = _spec(num_requests=3000, input_len={"kind": "uniform", "lo": 400, "hi": 600}, prefix=prefix).build()
    member = w.prefix_group >= 0
    assert member.mean() == pytest.approx(0.5, abs=0.04)
    counts = np.bincount(w.prefix_group[member], minlength=3)
    assert counts[0] > counts[1] > counts[2]  # zipf
    assert (w.prefix_len[member] == 300).all() and (w.prefix_len[~member] == 0).all()
    a, b = np.flatnonzero(w.prefix_group == 0)[:2]
    ha, hb = w.block_hashes_for(a, 128), w.block_hashes_for(b, 128)
    assert ha.size == w.input_len[a] // 128
    assert np.array_equal(ha[:2], hb[:2])  # 300 // 128 = 2 shared blocks
    assert not set(ha[2:].tolist()) & set(hb.tolist())
    other = np.flatnonzero(w.prefix_group == 1)[0]
    assert not set(w.block_hashes_for(other, 128).tolist()) & set(ha.tolist())
    flat, off = w.block_hashes_bulk(np.array([a, b, other]), 128)
    assert np.array_equal(flat[off[1] : off[2]], hb)
    assert (flat >= 0).all()


def test_prefix_prepend_vs_within():
    prefix = {"groups": 1, "prefix_len": 500, "mode": "prepend"}
    w = _spec(input_len=100, prefix=prefix).build()
    assert (w.input_len == 600).all()
    with pytest.raises(CloudMatrixError, match="shorter than prefix.prefix_len=500"):
        _spec(input_len=100, prefix={"groups": 1, "prefix_len": 500})


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"burst": 2}, "unknown key 'burst'"),
        ({"cv": 2.0}, r"\['cv'\] do not apply to kind='poisson'"),
        ({"duration": 10.0}, "exactly one of num_requests and duration"),
        ({"input_len": {"kind": "uniform", "lo": 9, "hi": 3}}, "lo <= hi"),
        ({"input_len": {"kind": "constant", "value": 5, "max": 9}}, r"\['max'\] do not apply"),
        ({"rate": 0}, "rate"),
        ({"kind": "gamma"}, r"needs \['cv'\]"),
    ],
)
def test_spec_errors_name_the_key(extra, message):
    with pytest.raises(CloudMatrixError, match=message):
        _spec(**extra)


def test_trace_round_trip_and_closed_replay(tmp_path):
    w = _spec(num_requests=20, prefix={"groups": 2, "prefix_len": 50}).build()
    for name in ("t.csv", "t.jsonl"):
        write_trace(w, tmp_path / name)
        r = read_trace(tmp_path / name)
        assert np.allclose(r.arrival_time, w.arrival_time)
        assert np.array_equal(r.prefix_group, w.prefix_group)
        assert np.array_equal(r.input_len, w.input_len)
    spec = WorkloadSpec.from_dict({"kind": "trace", "trace": "t.csv", "concurrency": 4, "num_requests": 5})
    c = spec.build(base_dir=tmp_path)
    assert c.closed_loop and c.concurrency == 4 and len(c) == 5 and np.isnan(c.arrival_time).all()


@pytest.mark.parametrize(
    "body, message",
    [
        ("arrival_time,input_len,output_len\n0,10,5\n1,abc,5\n", r"t\.csv:3: input_len is 'abc'"),
        ("arrival_time,input_len,output_len\n2,10,5\n1,10,5\n", r"t\.csv:3: .*sort the trace"),
        ("arrival_time,input_len,output_len\n0,0,5\n", r"t\.csv:2: input_len is 0"),
        ("arrival_time,input_len,output_len,foo\n0,1,5,1\n", r"t\.csv:1: unknown column"),
        ("arrival_time,input_len,output_len,prefix_group\n0,10,5,1\n", r"t\.csv:2: .*needs a prefix_len"),
        ("arrival_time,input_len,output_len,prefix_group,prefix_len\n0,10,5,1,11\n", r":2: prefix_len 11"),
        ("arrival_time,input_len,output_len\n0,10\n", r"t\.csv:2: 2 fields"),
        ("arrival_time,input_len,output_len\n,10,5\n", r"t\.csv:2: missing arrival_time"),
        ("arrival_time,input_len,output_len\n0,10.5,5\n", "whole number"),
    ],
)
def test_trace_errors_name_file_and_line(tmp_path, body, message):
    (tmp_path / "t.csv").write_text(body)
    with pytest.raises(CloudMatrixError, match=message):
        read_trace(tmp_path / "t.csv")


def test_jsonl_errors(tmp_path):
    p = tmp_path / "t.jsonl"
    good = '{"arrival_time": 0, "input_len": 5, "output_len": 1}'
    p.write_text(good + '\n\n{"arrival_time": 1, "input_len": 5\n')
    with pytest.raises(CloudMatrixError, match=r"t\.jsonl:3: invalid JSON"):
        read_trace(p)
    with pytest.raises(CloudMatrixError, match="does not exist"):
        read_trace(tmp_path / "nope.csv")


def test_workload_table_checks():
    with pytest.raises(CloudMatrixError, match="non-decreasing"):
        RequestTable(np.array([1.0, 0.5]), [1, 1], [1, 1], [-1, -1], [0, 0])
    with pytest.raises(CloudMatrixError, match="prefix_len"):
        RequestTable(np.array([0.0]), [10], [1], [0], [11])


def test_closed_loop_trace_needs_no_arrival_times(tmp_path):
    p = tmp_path / "lens.csv"
    p.write_text("input_len,output_len\n100,10\n200,20\n")
    w = read_trace(p, concurrency=2)
    assert w.closed_loop and w.input_len.tolist() == [100, 200] and np.isnan(w.arrival_time).all()
    with pytest.raises(CloudMatrixError, match="missing arrival_time"):
        read_trace(p)
