"""`cloudmatrix plan` output: the best-plan table rows, the Pareto frontier PNG and a self-contained HTML report.

matplotlib's Agg canvas, no pyplot: no GUI backend is ever touched.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cloudmatrix.plan.search.planner import PlanResult
from cloudmatrix.plan.search.plans import Plan

_COLORS = ("tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:gray")
TABLE_COLUMNS = ("system", "deployment", "chips", "tok/s /chip", "tok/s /user", "p90 TTFT / TPOT", "why it wins")


def _ms(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x * 1e3:.1f}"


def plan_rows(result: PlanResult) -> list[tuple[str, ...]]:
    """One row per best plan per system (strings; multi-line cells)."""
    rows = []
    for s in result.systems:
        p = s.best
        if p is None:
            rows.append((s.key, s.diagnosis or "no plan", "", "", "", "", ""))
            continue
        c = p.confirmed or {}
        cost = p.cost()
        sim_ttft = c.get("ttft_p90_s")
        lat = f"est {p.ttft:.2f} s / {_ms(p.tpot)} ms"
        if c:
            lat += f"\nsim {sim_ttft:.2f} s / {_ms(c.get('tpot_p90_s'))} ms"
        per_chip = f"{p.tokens_per_chip:,.0f}"
        if c.get("output_tokens_per_s_per_chip") is not None:
            per_chip += f"\nsim {c['output_tokens_per_s_per_chip']:,.0f}"
        if p.prefill is None:
            dep = (
                f"colocated {p.decode_instances}x {p.decode.label(p.model)} batch {p.batch_per_die}, chunk "
                f"{p.prefill_tokens_per_die} tok/die\n{p.software.label()}"
            )
        else:
            dep = (
                f"P {p.prefill_instances}x {p.prefill.label(p.model)} {p.prefill_tokens_per_die} tok/die\n"
                f"D {p.decode_instances}x {p.decode.label(p.model)} batch {p.batch_per_die}\n{p.software.label()}"
            )
        why = (
            f"bound: {p.bounding_op}\nHBM free {p.headroom / 1e9:.1f} GB/die\n"
            f"${cost.usd_per_million_tokens:.3f}/M tok, {cost.joules_per_token:.2f} J/tok"
        )
        rows.append((s.key, dep, str(p.chips), per_chip, f"{p.tokens_per_user:.1f}", lat, why))
    return rows


def frontier_figure(result: PlanResult) -> Figure:
    req = result.request
    fig = Figure(figsize=(7.0, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, s in enumerate(result.systems):
        x, y = s.frontier
        col = _COLORS[i % len(_COLORS)]
        if len(x):
            ax.plot(y, x, "-o", ms=3, color=col, label=f"{s.key} frontier")
        if s.best is not None:
            ax.plot([s.best.tokens_per_user], [s.best.tokens_per_chip], "*", ms=14, color=col, mec="black",
                    label=f"{s.key} best plan")  # fmt: skip
    ax.axvline(1 / req.tpot_p90, color="gray", ls="--", lw=1)
    lo, hi = ax.get_ylim()
    ax.text(1 / req.tpot_p90, lo + 0.02 * (hi - lo), f" TPOT {req.tpot_p90 * 1e3:g} ms", va="bottom", fontsize=8)
    ax.set_xlabel("output tokens/s per user (1 / TPOT at the batch cap)")
    ax.set_ylabel("output tokens/s per chip (all chips used)")
    ax.set_title(f"{req.model}: {req.traffic_label()}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_frontier_png(result: PlanResult, path: str | Path) -> Path:
    path = Path(path)
    frontier_figure(result).savefig(path, dpi=80)
    return path


def to_json(result: PlanResult) -> dict[str, Any]:
    return {
        "request": dict(result.request.__dict__),
        "points_screened": result.points,
        "confirm_s": result.confirm_s,
        "systems": [
            {
                "system": s.key,
                "chips_available": s.system.chips,
                "points_screened": s.screen.points,
                "step_model_calls": s.anchors,
                "screen_s": s.screen_s,
                "diagnosis": s.diagnosis,
                "best": None if s.best is None else s.best.to_dict(),
                "candidates": [p.to_dict() for p in s.candidates],
                "frontier": [{"tokens_per_s_per_chip": float(a), "tokens_per_s_per_user": float(b)}
                             for a, b in zip(*s.frontier, strict=True)],
            }  # fmt: skip
            for s in result.systems
        ],
    }


def write_html(result: PlanResult, path: str | Path) -> Path:
    """One file: the frontier picture (embedded), the best plans, every candidate with its simulation."""
    buf = io.BytesIO()
    frontier_figure(result).savefig(buf, format="png", dpi=80)
    img = base64.b64encode(buf.getvalue()).decode()
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in TABLE_COLUMNS)
    cells = ("".join(f"<td>{e(c).replace(chr(10), '<br>')}</td>" for c in row) for row in plan_rows(result))
    body = "".join(f"<tr>{c}</tr>" for c in cells)
    cand = []
    for s in result.systems:
        for p in s.candidates:
            cand.append(_candidate_row(p))
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>cloudmatrix plan</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{border:1px solid #ccc;padding:4px;
vertical-align:top;font-size:13px}}table{{border-collapse:collapse}}</style></head><body>
<h1>cloudmatrix plan: {e(result.request.model)}</h1><p>{e(result.request.traffic_label())}.
{result.points:,} points screened; candidates confirmed by the simulator in {result.confirm_s:.1f} s.</p>
<img alt="Pareto frontier" src="data:image/png;base64,{img}"><h2>Best plan per system</h2>
<table><tr>{head}</tr>{body}</table><h2>Candidates (screen, then simulation)</h2>
<table><tr><th>system</th><th>plan</th><th>chips</th><th>tok/s/chip</th><th>TPOT ms</th><th>TTFT p90 s (est)</th>
<th>simulated</th></tr>{"".join(cand)}</table>
<p>Screen: the step model at anchor batches, interpolated in numpy; TTFT is a queueing estimate. The simulator's
figures decide (docs/plan.md).</p></body></html>"""
    path = Path(path)
    path.write_text(doc, encoding="utf-8")
    return path


def _candidate_row(p: Plan) -> str:
    e = html.escape
    sim = "not simulated" if p.confirmed is None else e(json.dumps(
        {k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.confirmed.items()}))  # fmt: skip
    return (
        f"<tr><td>{e(p.system_key)}</td><td>{e(p.label())}<br>{e(p.software.label())}</td><td>{p.chips}</td>"
        f"<td>{p.tokens_per_chip:,.0f}</td><td>{p.tpot * 1e3:.1f}</td><td>{p.ttft:.2f}</td><td>{sim}</td></tr>"
    )
