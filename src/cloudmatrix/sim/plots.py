"""PNG plots of a simulation run (matplotlib's Agg canvas; no pyplot global state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cloudmatrix.sim.metrics import RequestRecords, TimeSeries


def _save(fig: Figure, path: str | Path) -> Path:
    p = Path(path)
    FigureCanvasAgg(fig)
    fig.savefig(p, dpi=120)
    return p


def plot_time_series(ts: TimeSeries, path: str | Path, *, title: str | None = None, warmup: float = 0.0) -> Path:
    """Throughput, decode batch and median latency over simulated time; the warm-up is shaded.

    Tokens are attributed over the span of the step or batch that made them, so a long prefill
    batch fills every bin it covers.
    """
    fig = Figure(figsize=(10, 7.5), layout="constrained")
    ax_tok, ax_run, ax_lat = fig.subplots(3, 1, sharex=True)
    mid = ts.t + ts.bin_s / 2
    ax_tok.plot(mid, ts.input_tokens_per_s / 1e3, label="input (prompt) tokens", color="tab:orange")
    ax_tok.plot(mid, ts.output_tokens_per_s / 1e3, label="output tokens", color="tab:blue")
    ax_tok.set_ylabel("throughput [k tokens/s]")
    ax_tok.set_ylim(bottom=0)
    ax_tok.legend(loc="lower right", fontsize=9)
    ax_run.plot(mid, ts.running, color="tab:green")
    ax_run.set_ylabel("decoding [sequences]")
    ax_run.set_ylim(bottom=0)
    ttft, tpot = ts.ttft_p50_s, ts.tpot_p50_s
    ax_lat.plot(mid, ttft * 1e3, ".-", ms=3, label="TTFT p50 (requests finishing in the bin)")
    ax_lat.plot(mid, tpot * 1e3, ".-", ms=3, label="TPOT p50")
    ax_lat.set_ylabel("latency [ms, log scale]")
    # TTFT (seconds under load) and TPOT (tens of ms) differ by orders of magnitude
    if np.any(ttft > 0) or np.any(tpot > 0):
        ax_lat.set_yscale("log")
    ax_lat.set_xlabel("simulated time [s]")
    ax_lat.legend(loc="center right", fontsize=9)
    for ax in (ax_tok, ax_run, ax_lat):
        ax.grid(alpha=0.3)
        if warmup > 0:
            ax.axvspan(0, warmup, color="0.85", zorder=0)
    if warmup > 0:
        ax_run.text(warmup / 2, 0.95, "warm-up\n(not measured)", transform=ax_run.get_xaxis_transform(),
                    ha="center", va="top", fontsize=9, color="0.35")  # fmt: skip
    fig.suptitle(title or "throughput and latency over simulated time")
    fig.text(0.99, 0.005, f"{ts.bin_s:g} s bins", ha="right", va="bottom", fontsize=8, color="0.4")
    return _save(fig, path)


def plot_latency_cdfs(
    r: RequestRecords,
    path: str | Path,
    *,
    title: str | None = None,
    window: tuple[float, float] | None = None,
) -> Path:
    """Empirical CDFs of TTFT, TPOT and E2E over finished requests; with `window`, over the same
    population as the summary's percentiles (the requests that arrived in it and finished)."""
    fig = Figure(figsize=(12, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    sel = r.finished.copy()
    if window is not None:
        sel &= (r.arrival >= window[0]) & (r.arrival <= window[1])
    panels = [
        ("TTFT", r.ttft[sel] * 1e3, "TTFT [ms]"),
        ("TPOT", r.tpot[sel] * 1e3, "TPOT [ms]"),
        ("E2E", r.e2e[sel], "E2E [s]"),
    ]
    for ax, (name, values, label) in zip(axes, panels, strict=True):
        v = np.sort(values[~np.isnan(values)])
        if v.size:
            ax.step(v, np.arange(1, v.size + 1) / v.size, where="post")
        else:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{name} CDF ({v.size} requests)")
        ax.grid(alpha=0.3)
    if window is not None:
        title = f"{title or 'latency distributions'} (requests that arrived in [{window[0]:g}, {window[1]:g}] s)"
    if title:
        fig.suptitle(title)
    return _save(fig, path)
