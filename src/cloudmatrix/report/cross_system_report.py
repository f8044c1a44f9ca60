"""Figures and a self-contained HTML report of one serving target across systems (`cloudmatrix compare`).

matplotlib's Agg canvas, no pyplot: no GUI backend is ever touched.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from cloudmatrix.plan.cross_system import ServingTarget, SystemResult
from cloudmatrix.plan.economics import Economics

CAVEAT = (
    "All systems are costed with the same cost model (cloudmatrix.perf), calibrated from kernel-level measurements "
    "only. Its error against published end-to-end measurements differs per system and changes as the cost model "
    "does: `cloudmatrix validate` measures it and docs/accuracy.md records it. Absolute numbers carry that error; "
    "ratios between systems are more robust, but only as far as the errors on the two systems are alike."
)

COLUMNS = (
    "system",
    "chips",
    "decode inst.",
    "batch/die",
    "TPOT ms",
    "decode tok/s/chip",
    "prefill tok/s/chip",
    "split P+D (idle)",
    "out tok/s/chip",
    "out tok/s/system",
    "tok/s per kW",
    "tok/s per $M",
    "$/M out tok",
    "J/out tok",
    "HBM free GB/die",
)

_COLORS = ("tab:red", "tab:green", "tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:gray")


def table_rows(results: Sequence[SystemResult]) -> list[tuple[str, ...]]:
    """The comparison table as strings, one row per system (units in COLUMNS)."""
    rows = []
    for r in results:
        s = r.split
        idle = r.chips - s.chips
        rows.append(
            (
                r.layout.key,
                f"{r.chips}",
                f"EP{r.decode_shape.ep}",
                f"{r.decode.batch_per_die}",
                f"{r.decode.tpot * 1e3:.1f}",
                f"{r.decode.tokens_per_s_per_chip:,.0f}",
                f"{r.prefill.tokens_per_s_per_chip:,.0f}",
                f"{s.prefill_chips}+{s.decode_chips} ({idle})",
                f"{r.output_tokens_per_s_per_chip:,.0f}",
                f"{r.output_tokens_per_s:,.0f}",
                f"{r.per_kw:,.0f}",
                f"{r.per_musd:,.0f}",
                f"{r.cost.usd_per_million_tokens:.3f}",
                f"{r.cost.joules_per_token:.2f}",
                f"{r.decode.hbm_headroom / 1e9:.1f}",
            )
        )
    return rows


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)
    return path


def plot_decode_curves(results: Sequence[SystemResult], target: ServingTarget, path: Path) -> Path:
    """Decode tokens/s per chip against TPOT, one line per system (its chosen decode instance), batch sweep."""
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    ax = fig.subplots()
    for i, r in enumerate(results):
        # distinct markers and dashes too, so that systems with identical curves (H800/H100) both show
        color, marker, dash = _COLORS[i % len(_COLORS)], "osD^v<>p"[i % 8], ("-", "--", ":", "-.")[i // 2 % 4]
        c = r.curve
        ax.plot(
            [p.tpot * 1e3 for p in c],
            [p.tokens_per_s_per_chip for p in c],
            marker=marker,
            ms=4,
            ls=dash,
            color=color,
            label=f"{r.layout.key} (decode EP{r.decode_shape.ep})",
        )
        ax.plot(r.decode.tpot * 1e3, r.decode.tokens_per_s_per_chip, "o", ms=11, mfc="none", mew=2, color=color)
        ax.annotate(
            f"{r.decode.batch_per_die}/die",
            (r.decode.tpot * 1e3, r.decode.tokens_per_s_per_chip),
            textcoords="offset points",
            xytext=(6, -12 if i % 2 == 0 else 6),
            fontsize=8,
            color=color,
        )
    ax.axvline(target.tpot_slo * 1e3, color="black", ls="--", lw=1.2, label=f"TPOT SLO {target.tpot_slo * 1e3:g} ms")
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # labels a reader can interpolate
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlim(0, max(target.tpot_slo * 1e3 * 1.6, 1))
    ax.set_xlabel("TPOT [ms] (time per output token of one sequence)")
    ax.set_ylabel("decode throughput [output tokens/s per chip] (log)")
    ax.set_title(
        f"{target.model}: decode batch sweep at mean context {target.kv_len:,.0f} tokens\n"
        "(circle: chosen batch; sweep stops at 512/die or when HBM is full)",
        fontsize=11,
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=9)
    return _save(fig, path)


def plot_system_bars(results: Sequence[SystemResult], target: ServingTarget, path: Path) -> Path:
    """System-level output throughput per chip, per kW, per $M of hardware, and $ per million output tokens."""
    fig = Figure(figsize=(12, 7.5), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    names = [r.layout.key for r in results]
    panels = (
        ("output tokens/s per chip", [r.output_tokens_per_s_per_chip for r in results], "{:,.0f}"),
        ("output tokens/s per kW (IT power)", [r.per_kw for r in results], "{:,.0f}"),
        ("output tokens/s per $1M of hardware", [r.per_musd for r in results], "{:,.0f}"),
        ("$ per million output tokens (lower is better)", [r.cost.usd_per_million_tokens for r in results], "${:.3f}"),
    )
    colors = [_COLORS[i % len(_COLORS)] for i in range(len(results))]
    for ax, (title, values, fmt) in zip(axes, panels, strict=True):
        bars = ax.bar(range(len(values)), values, color=colors)
        ax.set_xticks(range(len(values)), names, rotation=15, ha="right", fontsize=9)
        ax.set_title(title, fontsize=11)
        ax.bar_label(bars, labels=[fmt.format(v) for v in values], fontsize=8, padding=2)
        ax.set_ylim(0, max(values) * 1.15)
        top = max(values)
        digits = 3 if top < 1 else 2 if top < 10 else 0  # enough that no two ticks print alike ($0.025 vs $0.03)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _, d=digits: f"{v:,.{d}f}"))
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(
        f"{target.model}, {target.input_len:,} in / {target.output_len:,} out tokens, "
        f"TPOT <= {target.tpot_slo * 1e3:g} ms: "
        "whole system with prefill and decode pools balanced",
        fontsize=11,
    )
    return _save(fig, path)


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def write_html(
    results: Sequence[SystemResult], target: ServingTarget, econ: Economics, images: Sequence[Path], path: Path
) -> Path:
    e = html.escape
    head = "".join(f"<th>{e(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{e(v)}</td>" for v in row) + "</tr>" for row in table_rows(results))
    layouts = []
    for r in results:
        s = r.split
        opts = "; ".join(
            f"EP{o.shape.ep}: "
            + (
                f"batch {o.best.batch_per_die}/die, {o.split.prefill_instances} prefill + "
                f"{o.split.decode_instances} decode instances, {o.split.output_tokens_per_s:,.0f} out tok/s"
                if o.split
                else f"infeasible ({o.note})"
            )
            for o in r.options
        )
        sized = " (cluster sized to whole instances)" if r.layout.sized_by_layout else ""
        layouts.append(
            f"<h3>{e(r.layout.key)}</h3><ul>"
            f"<li>system: {r.chips} x {e(r.system.chip.name)}, {r.system.power / 1e3:,.0f} kW, "
            f"${r.system.price_usd / 1e6:,.1f}M{sized}"
            f"</li><li>prefill instance: {r.prefill_shape.dies} dies, EP{r.prefill_shape.ep}, "
            f"{r.prefill.tokens_per_die:,.0f} prompt tokens per die per batch</li>"
            f"<li>decode instance: {r.decode_shape.dies} dies, EP{r.decode_shape.ep}, batch {r.decode.batch_per_die} "
            f"per die (decode options tried: {e(opts)})</li>"
            f"<li>pool split: {s.prefill_instances} prefill instances ({s.prefill_chips} chips) + "
            f"{s.decode_instances} decode ({s.decode_chips} chips), {r.chips - s.chips} idle; bound by {s.bottleneck}; "
            f"ideal continuous split {s.ideal_prefill_fraction:.0%} prefill</li>"
            f"<li>precision: {e(r.layout.precision_label)}; microbatches {r.layout.microbatches}; "
            f"MTP {r.layout.mtp_depth} @ {r.layout.mtp_acceptance:.0%}</li>"
            + "".join(f"<li>source: {e(src)}</li>" for src in r.layout.sources)
            + "</ul>"
        )
    assumptions = [
        f"workload: {target.model}, {target.input_len:,} input and {target.output_len:,} output tokens per request, "
        f"TPOT SLO {target.tpot_slo * 1e3:g} ms; decode costed at the mean context {target.kv_len:,.0f} tokens; "
        "no prefix cache hits",
        "decode: the batch per die with the most tokens/s per chip whose TPOT meets the SLO and that fits in HBM "
        "(sweep up to 512 sequences per die)",
        "pool split: prefill chips x prefill rate = requests/s x input length, decode chips x decode rate = "
        "requests/s x output length, in whole instances; fixed systems keep their chip count (idle chips still "
        "count), HGX clusters are sized to one decode instance plus the best number of prefill instances",
        f"cost: hardware price amortised linearly over {econ.years:g} years, energy at ${econ.usd_per_kwh:g}/kWh "
        f"with PUE {econ.pue:g} for the system's power at load around the clock, utilisation "
        f"{econ.utilisation:.0%}; no networking outside the system, facility, staff or interest",
        "J/token: IT power at load / output tokens per second (no PUE)",
        "expert load perfectly balanced on every system (imbalance 1.0)",
    ]
    doc = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>cloudmatrix compare: {e(target.model)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1300px; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ border: 1px solid #bbb; padding: 3px 6px; text-align: right; }}
th {{ background: #eee; }} td:first-child {{ text-align: left; }}
.caveat {{ background: #fff4e0; border-left: 4px solid #e69500; padding: 0.6em 1em; }}
</style></head><body>
<h1>Does CloudMatrix384 beat GB200 NVL72, and at what cost?</h1>
<p>{e(target.model)}, {target.input_len:,} input / {target.output_len:,} output tokens, TPOT &le;
{target.tpot_slo * 1e3:g} ms. Generated by <code>cloudmatrix compare</code>.</p>
<p class="caveat"><b>Caveat.</b> {e(CAVEAT)}</p>
<h2>Comparison</h2>
<table id="compare-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>Figures</h2>
{"".join(f"<p>{_img(p, p.stem)}</p>" for p in images)}
<h2>Layouts and sources</h2>
{"".join(layouts)}
<h2>Assumptions</h2>
<ul>{"".join(f"<li>{e(a)}</li>" for a in assumptions)}</ul>
</body></html>
"""
    path.write_text(doc, encoding="utf-8")
    return path


def write_report(
    results: Sequence[SystemResult], target: ServingTarget, econ: Economics, out_dir: str | Path
) -> list[Path]:
    """Write decode_curves.png, system_bars.png and compare.html into `out_dir`; return their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = [
        plot_decode_curves(results, target, out / "decode_curves.png"),
        plot_system_bars(results, target, out / "system_bars.png"),
    ]
    return [*images, write_html(results, target, econ, images, out / "compare.html")]
