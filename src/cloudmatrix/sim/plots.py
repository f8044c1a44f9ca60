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


def plot_time_series(ts: TimeSeries, path: str | Path, *, title: str | None = None) -> Path:
    """Throughput, requests in the system and median latency over simulated time."""
    fig = Figure(figsize=(9, 8), layout="constrained")
    ax_tok, ax_run, ax_lat = fig.subplots(3, 1, sharex=True)
    mid = ts.t + ts.bin_s / 2
    ax_tok.plot(mid, ts.output_tokens_per_s, label="output")
    ax_tok.plot(mid, ts.input_tokens_per_s, label="input", alpha=0.7)
    ax_tok.set_ylabel("throughput [tokens/s]")
    ax_tok.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax_tok.legend(loc="upper right")
    ax_run.plot(mid, ts.running, color="tab:green")
    ax_run.set_ylabel("running [requests]")
    ax_lat.plot(mid, ts.ttft_p50_s * 1e3, ".-", label="TTFT p50")
    ax_lat.plot(mid, ts.tpot_p50_s * 1e3, ".-", label="TPOT p50")
    ax_lat.set_ylabel("latency [ms, log scale]")
    # TTFT (seconds under load) and TPOT (tens of ms) differ by orders of magnitude
    if np.any(ts.ttft_p50_s > 0) or np.any(ts.tpot_p50_s > 0):
        ax_lat.set_yscale("log")
    ax_lat.set_xlabel("simulated time [s]")
    ax_lat.legend(loc="upper right")
    for ax in (ax_tok, ax_run, ax_lat):
        ax.grid(alpha=0.3)
    fig.suptitle(title or f"throughput and latency over time ({ts.bin_s:g} s bins)")
    return _save(fig, path)


def plot_latency_cdfs(r: RequestRecords, path: str | Path, *, title: str | None = None) -> Path:
    """Empirical CDFs of TTFT, TPOT and E2E over finished requests."""
    fig = Figure(figsize=(12, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = [
        ("TTFT", r.ttft * 1e3, "TTFT [ms]"),
        ("TPOT", r.tpot * 1e3, "TPOT [ms]"),
        ("E2E", r.e2e, "E2E [s]"),
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
    if title:
        fig.suptitle(title)
    return _save(fig, path)
