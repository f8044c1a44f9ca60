"""Serving metrics from per-request arrays: latency percentiles, throughput, goodput, time series.

Times are seconds of simulated time (the run starts at 0); NaN marks a request that has
not reached that point (no first token / not finished). Token events are either instants
(times, counts) or spans (starts, ends, counts): a span's tokens are spread evenly over it, so
a prefill batch that runs for seconds fills every bin it covers rather than landing where it
ends. Where the runtime does not pass token events, token timing is approximated per request:
the prompt's tokens count at the first token, the first output token at `first_token_time`,
and the other `output_len - 1` tokens spread evenly up to `finish_time`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cloudmatrix.errors import CloudMatrixError

PERCENTILES = (50, 90, 99)
Events = tuple[np.ndarray, ...]  # (times [s], counts or levels) or (starts [s], ends [s], counts)


@dataclass(frozen=True)
class SLO:
    """Latency targets [s]; None = no target on that metric."""

    ttft: float | None = None
    tpot: float | None = None
    target: float = 0.9  # share of requests that must meet every target (goodput)


@dataclass(eq=False)
class RequestRecords:
    """Per-request outcomes (index = request id). mean_itl / max_itl [s] are optional."""

    arrival: np.ndarray
    first_token_time: np.ndarray
    finish_time: np.ndarray
    input_len: np.ndarray
    output_len: np.ndarray
    mean_itl: np.ndarray | None = None
    max_itl: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = np.shape(self.arrival)[0] if np.ndim(self.arrival) == 1 else -1
        for name in ("arrival", "first_token_time", "finish_time", "mean_itl", "max_itl"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, np.asarray(v, dtype=np.float64))
        for name in ("input_len", "output_len"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        for name in (
            "arrival",
            "first_token_time",
            "finish_time",
            "input_len",
            "output_len",
            "mean_itl",
            "max_itl",
        ):
            v = getattr(self, name)
            if v is not None and v.shape != (n,):
                raise CloudMatrixError(f"metrics: {name} has shape {v.shape}; every column needs shape ({n},).")

    def __len__(self) -> int:
        return self.arrival.size

    @property
    def finished(self) -> np.ndarray:
        return ~np.isnan(self.finish_time)

    @property
    def ttft(self) -> np.ndarray:
        return self.first_token_time - self.arrival

    @property
    def e2e(self) -> np.ndarray:
        return self.finish_time - self.arrival

    @property
    def tpot(self) -> np.ndarray:
        """(finish - first token) / (output_len - 1); NaN for output_len <= 1 or unfinished."""
        steps = (self.output_len - 1).astype(np.float64)
        steps[steps < 1] = np.nan
        return (self.finish_time - self.first_token_time) / steps


# ---- statistics -------------------------------------------------------------------------
def latency_stats(x: np.ndarray) -> dict[str, float]:
    """count, mean and p50/p90/p99 of the non-NaN values (NaN stats when there are none)."""
    v = np.asarray(x, dtype=np.float64)
    v = v[~np.isnan(v)]
    out: dict[str, float] = {"count": int(v.size), "mean": float(v.mean()) if v.size else math.nan}
    pct = np.percentile(v, PERCENTILES) if v.size else [math.nan] * len(PERCENTILES)
    out.update({f"p{p}": float(q) for p, q in zip(PERCENTILES, pct, strict=True)})
    return out


def _ramp_integral(start: np.ndarray, end: np.ndarray, weight: np.ndarray, t: np.ndarray) -> np.ndarray:
    """sum_i weight_i * (clip(t, start_i, end_i) - start_i) at each t, in O((n + len(t)) log n).

    With weight = rate this integrates a per-request constant rate; with weight = 1 it
    integrates the number of open intervals.
    """
    t = np.asarray(t, dtype=np.float64)

    def ramps(points: np.ndarray) -> np.ndarray:  # sum_i w_i * max(t - p_i, 0)
        order = np.argsort(points, kind="stable")
        p, w = points[order], weight[order]
        cw = np.concatenate([[0.0], np.cumsum(w)])
        cwp = np.concatenate([[0.0], np.cumsum(w * p)])
        k = np.searchsorted(p, t, side="right")
        return t * cw[k] - cwp[k]

    return ramps(start) - ramps(end)


def _output_token_curve(r: RequestRecords, t: np.ndarray) -> np.ndarray:
    """Cumulative output tokens produced by time t (finished requests, see module doc)."""
    done = r.finished & ~np.isnan(r.first_token_time)
    f, e, n = r.first_token_time[done], r.finish_time[done], r.output_len[done].astype(np.float64)
    # Point events: each first token, plus the rest of a request whose decode took no time.
    instant = e <= f
    pts_t = np.concatenate([f, e[instant]])
    pts_n = np.concatenate([np.ones(f.size), n[instant] - 1])
    order = np.argsort(pts_t, kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(pts_n[order])])
    total = cum[np.searchsorted(pts_t[order], t, side="right")]
    ramp = ~instant
    rate = (n[ramp] - 1) / (e[ramp] - f[ramp])
    return total + _ramp_integral(f[ramp], e[ramp], rate, t)


def _event_curve(events: Events, t: np.ndarray) -> np.ndarray:
    """Cumulative count by each t of (time, count) instants or (start, end, count) spans."""
    arrays = [np.asarray(a, dtype=np.float64) for a in events]
    if len(arrays) not in (2, 3) or any(a.shape != arrays[-1].shape for a in arrays):
        raise CloudMatrixError(f"events need 2 or 3 arrays of one shape, got {[a.shape for a in arrays]}.")
    if len(arrays) == 3:
        start, end, counts = arrays
        ramp = end > start
        instant = _event_curve((end[~ramp], counts[~ramp]), t)
        rate = counts[ramp] / (end[ramp] - start[ramp])
        return instant + _ramp_integral(start[ramp], end[ramp], rate, np.asarray(t, dtype=np.float64))
    times, counts = arrays
    order = np.argsort(times, kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(counts[order])])
    return cum[np.searchsorted(times[order], t, side="right")]


# ---- counts inside one window ----------------------------------------------------------
# Computed directly as overlaps: differencing two cumulative curves at the window's ends cancels
# large sums and can leave -1e-16 tokens/s for an empty window.
def _ramp_overlap(start: np.ndarray, end: np.ndarray, weight: np.ndarray, t0: float, t1: float) -> float:
    """sum_i weight_i * length of [start_i, end_i] within [t0, t1] (never negative)."""
    overlap = np.minimum(end, t1) - np.maximum(start, t0)
    return float(np.sum(weight * np.maximum(overlap, 0.0)))


def _instants_in(times: np.ndarray, counts: np.ndarray, t0: float, t1: float) -> float:
    """Counts at instants in (t0, t1], the same convention as the cumulative curves."""
    return float(np.sum(counts[(times > t0) & (times <= t1)]))


def events_in_window(events: Events, t0: float, t1: float) -> float:
    """What `_event_curve(events, [t0, t1])` differences to, computed without cancellation."""
    arrays = [np.asarray(a, dtype=np.float64) for a in events]
    if len(arrays) not in (2, 3) or any(a.shape != arrays[-1].shape for a in arrays):
        raise CloudMatrixError(f"events need 2 or 3 arrays of one shape, got {[a.shape for a in arrays]}.")
    if len(arrays) == 2:
        return _instants_in(arrays[0], arrays[1], t0, t1)
    start, end, counts = arrays
    ramp = end > start
    rate = counts[ramp] / (end[ramp] - start[ramp])
    return _instants_in(end[~ramp], counts[~ramp], t0, t1) + _ramp_overlap(start[ramp], end[ramp], rate, t0, t1)


def output_tokens_in_window(r: RequestRecords, t0: float, t1: float) -> float:
    """What `_output_token_curve(r, [t0, t1])` differences to, computed without cancellation."""
    done = r.finished & ~np.isnan(r.first_token_time)
    f, e, n = r.first_token_time[done], r.finish_time[done], r.output_len[done].astype(np.float64)
    instant = e <= f
    total = _instants_in(f, np.ones(f.size), t0, t1) + _instants_in(e[instant], n[instant] - 1, t0, t1)
    ramp = ~instant
    rate = (n[ramp] - 1) / (e[ramp] - f[ramp])
    return total + _ramp_overlap(f[ramp], e[ramp], rate, t0, t1)


def busy_fraction(starts: np.ndarray, durations: np.ndarray, t0: float, t1: float, servers: int) -> float:
    """Share of [t0, t1] that `servers` parallel servers spent in the given steps (each clipped to the window)."""
    if not t1 > t0 or servers < 1:
        return 0.0
    s = np.asarray(starts, dtype=np.float64)
    e = s + np.asarray(durations, dtype=np.float64)
    busy = np.clip(np.minimum(e, t1) - np.maximum(s, t0), 0.0, None).sum()
    return float(busy / (servers * (t1 - t0)))


def _window(r: RequestRecords, warmup: float, end: float | None) -> tuple[float, float]:
    if warmup < 0:
        raise CloudMatrixError(f"warmup must be >= 0 s, got {warmup}.")
    if end is None:
        end = float(np.nanmax(r.finish_time)) if r.finished.any() else math.nan
    if not (end > warmup):
        raise CloudMatrixError(
            f"the measurement window [{warmup}, {end}] s is empty; lower the warm-up or run longer "
            "(no request finished after the warm-up)."
        )
    return float(warmup), float(end)


# ---- the summary ------------------------------------------------------------------------
def summarize(
    r: RequestRecords,
    *,
    warmup: float = 0.0,
    end: float | None = None,
    chips: int | Mapping[str, int] | None = None,
    slo: SLO | None = None,
    output_events: Events | None = None,
    input_events: Events | None = None,
    ttft_parts: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Headline metrics over the window [warmup, end] s (end defaults to the last finish).

    Latency percentiles, SLO attainment and goodput cover the requests that arrived in the
    window and finished (the runtime runs them to completion); request throughput counts
    requests finishing in the window; token throughput counts tokens produced in it.
    `chips`: a total, or chips per pool (e.g. {"prefill": 96, "decode": 160}), for tokens/s
    per chip. Event arrays, when given, replace the per-request token timing approximation.
    `ttft_parts`: per-request seconds of each part of TTFT (mean and p50 of each are reported).
    """
    start, stop = _window(r, warmup, end)
    span = stop - start
    if output_events is not None:
        out_tok = events_in_window(output_events, start, stop)
    else:
        out_tok = output_tokens_in_window(r, start, stop)
    if input_events is not None:
        in_tok = events_in_window(input_events, start, stop)
    else:
        in_tok = events_in_window((r.first_token_time, r.input_len), start, stop)

    arrived = (r.arrival >= start) & (r.arrival <= stop)
    sel = arrived & r.finished
    finished_in = r.finished & (r.finish_time >= start) & (r.finish_time <= stop)
    out: dict[str, Any] = {
        "window_s": [start, stop],
        "latency_population": (
            f"the {int(sel.sum()):,} requests that arrived in [{start:g}, {stop:g}] s and finished"
            + (
                f" ({int((arrived & ~r.finished).sum()):,} more never finished)"
                if (arrived & ~r.finished).any()
                else ""
            )
        ),
        "requests": {
            "total": len(r),
            "arrived_in_window": int(arrived.sum()),
            "finished_in_window": int(finished_in.sum()),
            "unfinished": int((~r.finished).sum()),
            "per_s": float(finished_in.sum() / span),
        },
        "ttft_s": latency_stats(r.ttft[sel]),
        "tpot_s": latency_stats(r.tpot[sel]),
        "e2e_s": latency_stats(r.e2e[sel]),
        "input_tokens_per_s": in_tok / span,
        "output_tokens_per_s": out_tok / span,
    }
    if ttft_parts is not None:
        out["ttft_components_s"] = {
            name: {k: v for k, v in latency_stats(np.asarray(x)[sel]).items() if k in ("mean", "p50")}
            for name, x in ttft_parts.items()
        }
    if r.mean_itl is not None:
        w = np.clip(r.output_len[sel] - 1, 0, None).astype(np.float64)
        m = r.mean_itl[sel]
        ok = ~np.isnan(m) & (w > 0)
        out["itl_s"] = latency_stats(m)
        # The token-weighted mean is the mean gap over all tokens, not over requests.
        out["itl_s"]["token_weighted_mean"] = float(np.sum(m[ok] * w[ok]) / w[ok].sum()) if ok.any() else math.nan
    if r.max_itl is not None:
        out["max_itl_s"] = latency_stats(r.max_itl[sel])
    if chips is not None:
        out["per_chip"] = _per_chip(chips, in_tok / span, out_tok / span)
    if slo is not None:
        good = sel & meets_slo(r, slo)
        out["slo"] = {"ttft_s": slo.ttft, "tpot_s": slo.tpot, "target": slo.target}
        out["goodput_requests_per_s"] = float(good.sum() / span)
        out["slo_attainment"] = float(good.sum() / sel.sum()) if sel.any() else math.nan
        out["slo_verdict"] = slo_verdict(r, sel, slo)
    return out


def slo_verdict(r: RequestRecords, sel: np.ndarray, slo: SLO) -> str:
    """One line: are the SLOs met (at least `target` of the requests within every limit), which
    metric binds, and by how much (its percentile at the target share against its limit)."""
    n = int(sel.sum())
    limits = {"TTFT": (slo.ttft, r.ttft), "TPOT": (slo.tpot, r.tpot)}
    limits = {k: v for k, v in limits.items() if v[0] is not None}
    if not limits:
        return "no SLO set; add [slo] ttft and/or tpot (seconds) to the scenario for a verdict"
    if n == 0:
        return "no request of the window finished; run longer for a verdict"
    share = float((sel & meets_slo(r, slo)).sum() / n)
    q = slo.target * 100
    worst = None
    for name, (limit, x) in limits.items():
        v = x[sel]
        v = v[~np.isnan(v)]
        at = float(np.percentile(v, q)) if v.size else 0.0
        ratio = at / limit
        if worst is None or ratio > worst[1]:
            worst = (name, ratio, at, limit)
    name, ratio, at, limit = worst  # type: ignore[misc]

    def fmt(x: float) -> str:
        return f"{x * 1e3:,.1f} ms" if x < 1 else f"{x:,.2f} s"

    met = share >= slo.target
    head = f"SLOs {'met' if met else 'NOT met'}: {share:.1%} of {n:,} requests within every limit"
    head += f" (target {slo.target:.0%})"
    if ratio <= 1:
        return f"{head}; binding: {name} p{q:g} {fmt(at)} is {1 - ratio:.0%} under its {fmt(limit)} limit"
    return f"{head}; binding: {name} p{q:g} {fmt(at)} is {ratio - 1:.0%} over its {fmt(limit)} limit"


def meets_slo(r: RequestRecords, slo: SLO) -> np.ndarray:
    """Finished requests within both targets (TPOT is vacuous for one-token outputs)."""
    ok = r.finished.copy()
    if slo.ttft is not None:
        ok &= r.ttft <= slo.ttft
    if slo.tpot is not None:
        tpot = r.tpot
        ok &= np.isnan(tpot) | (tpot <= slo.tpot)
    return ok


def _per_chip(chips: int | Mapping[str, int], in_tps: float, out_tps: float) -> dict[str, Any]:
    pools = {"total": chips} if isinstance(chips, int) else dict(chips)
    if not pools or any(not isinstance(c, int) or c < 1 for c in pools.values()):
        raise CloudMatrixError(f"chip counts must be positive integers, got {chips!r}.")
    res: dict[str, Any] = {
        pool: {"input_tokens_per_s": in_tps / c, "output_tokens_per_s": out_tps / c} for pool, c in pools.items()
    }
    if "total" not in res:
        total = sum(pools.values())
        res["total"] = {"input_tokens_per_s": in_tps / total, "output_tokens_per_s": out_tps / total}
    return res


# ---- time series ------------------------------------------------------------------------
@dataclass(frozen=True)
class TimeSeries:
    """Per-bin figures; t holds the bin starts [s]."""

    t: np.ndarray
    bin_s: float
    output_tokens_per_s: np.ndarray
    input_tokens_per_s: np.ndarray
    running: np.ndarray  # time-averaged requests in the system (or the level from running_events)
    ttft_p50_s: np.ndarray  # of requests finishing in the bin; NaN where none
    tpot_p50_s: np.ndarray


def time_series(
    r: RequestRecords,
    *,
    bin_s: float = 1.0,
    end: float | None = None,
    output_events: Events | None = None,
    input_events: Events | None = None,
    running_events: Events | None = None,
) -> TimeSeries:
    """Bin the run into `bin_s`-second bins from 0 to `end` (default: last finish).

    running_events = (times, level after each time) gives a step function (e.g. the
    decode batch size); without it, `running` counts requests between arrival and finish.
    """
    if not bin_s > 0:
        raise CloudMatrixError(f"time-series bin must be > 0 s, got {bin_s}.")
    if end is None:
        end = float(np.nanmax(np.concatenate([r.finish_time, r.arrival, [0.0]])))
    nbins = max(1, math.ceil(end / bin_s))
    edges = np.arange(nbins + 1) * bin_s
    out_c = _event_curve(output_events, edges) if output_events is not None else _output_token_curve(r, edges)
    in_ev = input_events if input_events is not None else (r.first_token_time, r.input_len)
    in_c = _event_curve(in_ev, edges)
    if running_events is not None:
        times, level = (np.asarray(a, dtype=np.float64) for a in running_events)
        order = np.argsort(times, kind="stable")
        times, level = times[order], level[order]
        if times.size:
            stops = np.append(times[1:], max(edges[-1], times[-1]))
            area = _ramp_integral(times, stops, level, edges)
        else:  # nothing ever decoded (e.g. a prefill-only run)
            area = np.zeros(edges.size)
    else:
        stops = np.where(r.finished, r.finish_time, edges[-1])
        area = _ramp_integral(r.arrival, stops, np.ones(len(r)), edges)
    ttft50, tpot50 = _binned_median(r, edges)
    return TimeSeries(
        t=edges[:-1],
        bin_s=float(bin_s),
        output_tokens_per_s=np.diff(out_c) / bin_s,
        input_tokens_per_s=np.diff(in_c) / bin_s,
        running=np.diff(area) / bin_s,
        ttft_p50_s=ttft50,
        tpot_p50_s=tpot50,
    )


def _binned_median(r: RequestRecords, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    nb = edges.size - 1
    done = np.flatnonzero(r.finished)
    b = np.searchsorted(edges, r.finish_time[done], side="right") - 1
    keep = (b >= 0) & (b < nb)
    done, b = done[keep], b[keep]
    res = []
    for x in (r.ttft[done], r.tpot[done]):
        med = np.full(nb, np.nan)
        order = np.lexsort((x, b))  # by bin, then value; NaN sorts last within a bin
        xs, bs = x[order], b[order]
        valid = ~np.isnan(xs)
        xs, bs = xs[valid], bs[valid]
        starts = np.searchsorted(bs, np.arange(nb), side="left")
        ends = np.searchsorted(bs, np.arange(nb), side="right")
        has = ends > starts
        lo = (starts + ends - 1) // 2
        hi = (starts + ends) // 2
        med[has] = 0.5 * (xs[lo[has]] + xs[hi[has]])
        res.append(med)
    return res[0], res[1]


# ---- writers ----------------------------------------------------------------------------
def write_requests_csv(path: str | Path, r: RequestRecords) -> None:
    """One row per request; times in seconds; empty cells where a request did not get there."""
    cols: dict[str, np.ndarray] = {
        "request": np.arange(len(r)),
        "arrival_s": r.arrival,
        "first_token_s": r.first_token_time,
        "finish_s": r.finish_time,
        "input_len": r.input_len,
        "output_len": r.output_len,
        "ttft_s": r.ttft,
        "tpot_s": r.tpot,
        "e2e_s": r.e2e,
    }
    if r.mean_itl is not None:
        cols["mean_itl_s"] = r.mean_itl
    if r.max_itl is not None:
        cols["max_itl_s"] = r.max_itl
    # Streamed in chunks of rows, so memory stays flat however long the run. Cells are plain numbers
    # or empty, so a join needs no CSV quoting and is ~6x faster than the csv module.
    with Path(path).open("w", newline="") as f:
        f.write(",".join(cols) + "\n")
        for lo in range(0, len(r), _CSV_CHUNK):
            text = [_format_column(v[lo : lo + _CSV_CHUNK]) for v in cols.values()]
            f.writelines(",".join(row) + "\n" for row in zip(*text, strict=True))


_CSV_CHUNK = 4096  # rows per chunk: ~6 MB of Python strings at a time


def _format_column(v: np.ndarray) -> list[str]:
    if v.dtype.kind in "iu":
        return v.astype(str).tolist()
    return [f"{x:.9g}" if x == x else "" for x in v.tolist()]  # x != x only for NaN


def jsonable(obj: Any) -> Any:
    """Deep copy with NaN/inf -> None and numpy scalars/arrays -> Python types (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [jsonable(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_summary_json(path: str | Path, summary: Mapping[str, Any]) -> None:
    Path(path).write_text(json.dumps(jsonable(summary), indent=2, allow_nan=False) + "\n")
