import json
import math

import numpy as np
import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.sim.metrics import (
    SLO,
    RequestRecords,
    latency_stats,
    meets_slo,
    summarize,
    time_series,
    write_requests_csv,
    write_summary_json,
)
from cloudmatrix.sim.plots import plot_latency_cdfs, plot_time_series

NAN = math.nan


def _records(**kw) -> RequestRecords:
    # 0: TTFT 1, TPOT 0.5, E2E 3; 1: one output token; 2: TTFT 2, TPOT 1; 3: never served.
    return RequestRecords(
        arrival=np.array([0.0, 1.0, 2.0, 3.0]),
        first_token_time=np.array([1.0, 1.5, 4.0, NAN]),
        finish_time=np.array([3.0, 2.0, 6.0, NAN]),
        input_len=np.array([10, 20, 30, 40]),
        output_len=np.array([5, 1, 3, 2]),
        **kw,
    )


def test_per_request_latencies():
    r = _records()
    assert np.allclose(r.ttft[:3], [1.0, 0.5, 2.0]) and np.isnan(r.ttft[3])
    tpot = r.tpot
    assert tpot[0] == pytest.approx(0.5) and np.isnan(tpot[1]) and tpot[2] == pytest.approx(1.0)
    assert np.allclose(r.e2e[:3], [3.0, 1.0, 4.0])


def test_latency_stats_ignore_nan():
    s = latency_stats(np.array([1.0, NAN, 3.0, 2.0]))
    assert s["count"] == 3 and s["mean"] == pytest.approx(2.0) and s["p50"] == pytest.approx(2.0)
    assert s["p99"] == pytest.approx(2.98)
    assert math.isnan(latency_stats(np.array([NAN]))["mean"])


def test_summary_full_window():
    s = summarize(_records(), chips={"prefill": 2, "decode": 3}, slo=SLO(ttft=1.0, tpot=0.6))
    assert s["window_s"] == [0.0, 6.0]
    assert s["ttft_s"]["mean"] == pytest.approx(7 / 6) and s["ttft_s"]["p50"] == pytest.approx(1.0)
    assert s["tpot_s"]["count"] == 2 and s["tpot_s"]["mean"] == pytest.approx(0.75)
    assert s["output_tokens_per_s"] == pytest.approx(9 / 6)
    assert s["input_tokens_per_s"] == pytest.approx(60 / 6)
    assert s["requests"]["unfinished"] == 1 and s["requests"]["per_s"] == pytest.approx(0.5)
    assert s["per_chip"]["decode"]["output_tokens_per_s"] == pytest.approx(0.5)
    assert s["per_chip"]["prefill"]["input_tokens_per_s"] == pytest.approx(5.0)
    assert s["per_chip"]["total"]["output_tokens_per_s"] == pytest.approx(9 / 6 / 5)
    # Requests 0 and 1 meet the SLO (1's TPOT is vacuous); 2 misses TTFT.
    assert s["goodput_requests_per_s"] == pytest.approx(2 / 6)
    assert s["slo_attainment"] == pytest.approx(2 / 3)


def test_summary_warmup_window():
    s = summarize(_records(), warmup=2.0)
    assert s["ttft_s"]["count"] == 1 and s["ttft_s"]["mean"] == pytest.approx(2.0)
    # In (2, 6]: request 0's last 2 of 4 spread tokens, request 2's 3 tokens.
    assert s["output_tokens_per_s"] == pytest.approx(5 / 4)
    assert s["input_tokens_per_s"] == pytest.approx(30 / 4)
    assert s["requests"]["finished_in_window"] == 3


def test_summary_prefers_event_arrays():
    events = (np.array([2.5, 5.0, 7.0]), np.array([4, 6, 100]))
    s = summarize(_records(), warmup=2.0, output_events=events, input_events=events)
    assert s["output_tokens_per_s"] == pytest.approx(10 / 4)
    assert s["input_tokens_per_s"] == pytest.approx(10 / 4)


def test_itl_stats_are_token_weighted():
    r = _records(mean_itl=np.array([0.5, NAN, 1.0, NAN]), max_itl=np.array([0.9, NAN, 1.5, NAN]))
    s = summarize(r)
    assert s["itl_s"]["mean"] == pytest.approx(0.75)
    assert s["itl_s"]["token_weighted_mean"] == pytest.approx((0.5 * 4 + 1.0 * 2) / 6)
    assert s["max_itl_s"]["p50"] == pytest.approx(1.2)


def test_meets_slo_and_errors():
    r = _records()
    assert meets_slo(r, SLO(ttft=0.6)).tolist() == [False, True, False, False]
    with pytest.raises(CloudMatrixError, match="window"):
        summarize(r, warmup=10.0)
    with pytest.raises(CloudMatrixError, match="chip counts"):
        summarize(r, chips={"decode": 0})
    with pytest.raises(CloudMatrixError, match="shape"):
        RequestRecords(np.zeros(2), np.zeros(2), np.zeros(3), np.ones(2), np.ones(2))


def test_time_series_hand_computed():
    r = RequestRecords(np.array([0.0]), np.array([1.5]), np.array([3.5]), np.array([10]), np.array([5]))
    ts = time_series(r, bin_s=1.0)
    assert ts.t.tolist() == [0.0, 1.0, 2.0, 3.0]
    # First token at 1.5, four more at 2 tokens/s over (1.5, 3.5].
    assert np.allclose(ts.output_tokens_per_s, [0, 2, 2, 1])
    assert np.allclose(ts.input_tokens_per_s, [0, 10, 0, 0])
    assert np.allclose(ts.running, [1, 1, 1, 0.5])
    assert ts.ttft_p50_s[3] == pytest.approx(1.5) and np.isnan(ts.ttft_p50_s[:3]).all()
    assert ts.output_tokens_per_s.sum() * ts.bin_s == pytest.approx(5)


def test_time_series_running_events_step_function():
    r = _records()
    ts = time_series(r, bin_s=2.0, end=6.0, running_events=(np.array([0.0, 1.0, 4.0]), np.array([2, 4, 0])))
    assert np.allclose(ts.running, [3.0, 4.0, 0.0])
    assert ts.output_tokens_per_s.sum() * 2.0 == pytest.approx(9)


def test_writers_and_plots(tmp_path):
    r = _records(mean_itl=np.array([0.5, NAN, 1.0, NAN]))
    write_requests_csv(tmp_path / "req.csv", r)
    lines = (tmp_path / "req.csv").read_text().splitlines()
    assert lines[0].startswith("request,arrival_s,first_token_s,finish_s,input_len,output_len,ttft_s")
    assert lines[1].split(",")[:7] == ["0", "0", "1", "3", "10", "5", "1"]
    assert lines[4].split(",")[2] == ""  # unserved request: empty cell, not "nan"
    write_summary_json(tmp_path / "s.json", summarize(r, slo=SLO(tpot=0.1)))
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["tpot_s"]["count"] == 2 and data["itl_s"]["count"] == 2
    ts = time_series(r, bin_s=0.5)
    for out in (plot_time_series(ts, tmp_path / "ts.png"), plot_latency_cdfs(r, tmp_path / "cdf.png")):
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000


def test_window_counts_are_overlaps_and_never_negative():
    """Differencing cumulative curves left -8.9e-16 output tokens/s for a window with no decode
    (`simulate paper-prefill-perfect --duration 2 --set warmup=1`); the window counts are overlaps now."""
    from cloudmatrix.sim.metrics import _event_curve, _output_token_curve, events_in_window, output_tokens_in_window

    rng = np.random.default_rng(3)
    start = rng.uniform(0, 100, 500) * 1e3  # large absolute times make the cancellation visible
    end = start + rng.uniform(0, 5, 500)
    counts = rng.integers(1, 9, 500).astype(float)
    for t0, t1 in ((start.min() - 1, start.max() + 10), (start[7], start[7] + 0.5), (end.max() + 1, end.max() + 2)):
        direct = events_in_window((start, end, counts), t0, t1)
        diffed = float(np.diff(_event_curve((start, end, counts), np.array([t0, t1])))[0])
        assert direct >= 0 and math.isclose(direct, diffed, rel_tol=1e-9, abs_tol=1e-6)
    assert events_in_window((start, end, counts), end.max() + 1, end.max() + 2) == 0.0

    r = _records()  # finished requests produce 5 + 1 + 3 tokens; the fourth was never served
    for t0, t1 in ((0.0, 10.0), (1.2, 3.5), (6.5, 9.0)):
        direct = output_tokens_in_window(r, t0, t1)
        diffed = float(np.diff(_output_token_curve(r, np.array([t0, t1])))[0])
        assert direct >= 0 and math.isclose(direct, diffed, abs_tol=1e-12)
    assert output_tokens_in_window(r, 0.0, 10.0) == 9.0
    assert output_tokens_in_window(r, 6.5, 9.0) == 0.0
