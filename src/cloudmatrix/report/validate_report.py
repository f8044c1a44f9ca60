"""Reports of `cloudmatrix validate`: markdown and self-contained HTML (tables plus a predicted-vs-measured
scatter per metric, PNG in base64), a per-row CSV and JSON. One table builder feeds every format."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cloudmatrix.validate.accuracy import MetricStats, SliceStats, summarize
from cloudmatrix.validate.rows import ValidationRow, metric_label


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class SuiteResult:
    """One suite's rows and what to print around them."""

    name: str  # "silicon" or "paper"
    metrics: tuple[str, ...]
    rows: list[ValidationRow]
    preamble: list[str] = field(default_factory=list)  # lines about the input set (dedup counts, ...)
    scale: float = 1e3  # metric values x scale in the tables
    unit: str = "ms"
    data_reasons: tuple[str, ...] = ()  # refusals caused by the measured set itself (no estimator can run those)

    def summary(self) -> tuple[SliceStats, list[SliceStats]]:
        return summarize(self.rows, self.metrics)


def pct(x: float | None) -> str:
    return "–" if x is None else f"{x:+.1%}"


def share(x: float | None) -> str:
    return "–" if x is None else f"{x:.0%}"


def mape(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def _stats_cells(m: MetricStats | None) -> list[str]:
    if m is None or m.n == 0:
        return ["0", "–", "–", "–", "–"]
    return [str(m.n), mape(m.mape), pct(m.signed_median), share(m.within_10), share(m.within_20)]


def tables(res: SuiteResult) -> list[Table]:
    overall, slices = res.summary()
    out = []
    head = ["metric", "rows predicted", "MAPE", "signed median", "within 10%", "within 20%"]
    body = []
    for k in res.metrics:
        body.append([metric_label(k), *_stats_cells(overall.metrics.get(k))])
    calib = sum(r.tag == "calibration" for r in res.rows)
    title = (
        f"{res.name} suite: overall ({overall.predicted} of {overall.rows} validation rows predicted, "
        f"{overall.coverage:.0%}"
    )
    if res.data_reasons:
        complete = overall.rows - sum(overall.refused.get(k, 0) for k in res.data_reasons)
        share_complete = overall.predicted / max(complete, 1)
        title += f"; {overall.predicted} of the {complete} with a complete layout, {share_complete:.0%}"
    out.append(
        Table(
            title + ")",
            head,
            body,
            (f"{calib} calibration rows listed but not scored. " if calib else "")
            + "error = predicted / measured - 1; negative = the twin predicts less than measured.",
        )
    )
    if overall.reference_all:
        ref_body = []
        for k in res.metrics:
            a, t, s = overall.reference_all[k], overall.twin_on_shared[k], overall.reference[k]
            ref_body.append([
                metric_label(k), str(overall.reference_predicted), mape(a.mape), pct(a.signed_median), str(s.n),
                mape(t.mape), mape(s.mape), pct(t.signed_median), pct(s.signed_median),
            ])  # fmt: skip
        out.append(
            Table(
                "side by side: aiconfigurator's own estimate",
                [
                    "metric",
                    "AIC rows",
                    "AIC MAPE",
                    "AIC signed median",
                    "shared rows",
                    "twin MAPE (shared)",
                    "AIC MAPE (shared)",
                    "twin median (shared)",
                    "AIC median (shared)",
                ],  # fmt: skip
                ref_body,
                "shared = rows both the twin and AIC predict.",
            )
        )
    if overall.refused:
        out.append(
            Table(
                "rows the twin cannot express, by reason",
                ["reason", "rows"],
                [[k, str(v)] for k, v in overall.refused.most_common()],
            )
        )
    sl_head = ["slice", "rows", "predicted"]
    for k in res.metrics:
        sl_head += [f"{metric_label(k)} MAPE", f"{metric_label(k)} median", f"{metric_label(k)} ≤20%"]
    sl_head.append("main refusal")
    sl_body = []
    for s in slices:
        cells = [s.name, str(s.rows), str(s.predicted)]
        for k in res.metrics:
            m = s.metrics.get(k)
            none = m is None or m.n == 0
            cells += ["–", "–", "–"] if none else [mape(m.mape), pct(m.signed_median), share(m.within_20)]
        top = s.refused.most_common(1)
        cells.append(f"{top[0][0]} ({top[0][1]})" if top else "")
        sl_body.append(cells)
    out.append(Table("per slice", sl_head, sl_body))
    return out


def row_table(res: SuiteResult, limit: int | None = None) -> Table:
    """Every predicted row: measured, predicted, error per metric, route, deployment."""
    head = ["id", "slice", "tag"]
    for k in res.metrics:
        head += [f"{k} measured ({res.unit})", f"{k} predicted", f"{k} error"]
    head += ["route", "deployment"]
    body = []
    rows = [r for r in res.rows if r.refused is None]
    for r in rows[:limit]:
        cells = [r.id, r.slice, r.tag]
        for k in res.metrics:
            cells += [_v(r.measured.get(k), res.scale), _v(r.predicted.get(k), res.scale), pct(r.error(k))]
        cells += [r.route, r.deployment]
        body.append(cells)
    return Table(f"{res.name} rows predicted ({len(rows)})", head, body)


def _v(x: float | None, scale: float) -> str:
    return "–" if x is None else f"{x * scale:,.4g}"


# ------------------------------------------------------------------ markdown / html
def md_table(t: Table) -> str:
    def esc(c: str) -> str:
        return c.replace("|", "\\|").replace("\n", " ")

    lines = [f"**{t.title}**", "", "| " + " | ".join(t.header) + " |", "|" + "---|" * len(t.header)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in t.rows]
    if t.note:
        lines += ["", t.note]
    return "\n".join(lines)


def markdown(results: Sequence[SuiteResult], header: str = "", with_rows: bool = True) -> str:
    parts = ["# Twin accuracy (`cloudmatrix validate`)", ""]
    if header:
        parts += [header, ""]
    for res in results:
        parts += [f"## {res.name} suite", ""]
        parts += [f"- {line}" for line in res.preamble] + ([""] if res.preamble else [])
        for t in tables(res):
            parts += [md_table(t), ""]
        if with_rows:
            parts += [md_table(row_table(res)), ""]
    return "\n".join(parts)


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in t.rows)
    note = f"<p>{html.escape(t.note)}</p>" if t.note else ""
    return f"<h3>{html.escape(t.title)}</h3><table><tr>{head}</tr>{body}</table>{note}"


def scatter_png(res: SuiteResult, metric: str) -> bytes:
    """Predicted vs measured on log axes with the y = x line and a ±20% band, one colour per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(r.measured[metric] * res.scale, r.predicted[metric] * res.scale, r.slice.split(" ")[0])
           for r in res.rows if r.refused is None and r.tag == "validation" and metric in r.predicted]  # fmt: skip
    fig, ax = plt.subplots(figsize=(6, 5.5), dpi=100)
    groups = sorted({g for *_, g in pts})
    for g in groups:
        xs = [x for x, _, gg in pts if gg == g]
        ys = [y for _, y, gg in pts if gg == g]
        ax.scatter(xs, ys, s=14, alpha=0.75, label=g)
    ref = [(r.measured[metric] * res.scale, r.reference[metric] * res.scale)
           for r in res.rows if r.tag == "validation" and metric in r.reference]  # fmt: skip
    if ref:
        ax.scatter([x for x, _ in ref], [y for _, y in ref], s=10, marker="x", c="grey", alpha=0.5, label="AIC")
    vals = [v for x, y, _ in pts for v in (x, y)] + [v for x, y in ref for v in (x, y)]
    if vals:
        lo, hi = min(vals) / 1.5, max(vals) * 1.5
        ax.plot([lo, hi], [lo, hi], "k-", lw=1, label="y = x")
        ax.fill_between([lo, hi], [lo * 0.8, hi * 0.8], [lo * 1.2, hi * 1.2], color="k", alpha=0.07, label="±20%")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"measured {metric_label(metric)} ({res.unit})")
    ax.set_ylabel(f"twin {metric_label(metric)} ({res.unit})")
    ax.set_title(f"{res.name}: {metric_label(metric)}, {len(pts)} rows")
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=7, loc="upper left")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def html_report(results: Sequence[SuiteResult], header: str = "") -> str:
    parts = [
        "<!doctype html><meta charset='utf-8'><title>cloudmatrix validate</title>",
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:3px 6px;font-size:12px}"
        "table{border-collapse:collapse;margin-bottom:1em}img{margin:0.5em}</style>",
        "<h1>Twin accuracy (cloudmatrix validate)</h1>",
    ]
    if header:
        parts.append(f"<p>{html.escape(header)}</p>")
    for res in results:
        parts.append(f"<h2>{html.escape(res.name)} suite</h2>")
        if res.preamble:
            parts.append("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in res.preamble) + "</ul>")
        for k in res.metrics:
            if any(r.refused is None and k in r.predicted for r in res.rows):
                b64 = base64.b64encode(scatter_png(res, k)).decode()
                parts.append(f"<img alt='{html.escape(k)} scatter' src='data:image/png;base64,{b64}'>")
        parts += [_html_table(t) for t in tables(res)]
        parts.append(_html_table(row_table(res)))
    return "".join(parts)


# ------------------------------------------------------------------ csv / json
CSV_COLUMNS = ("suite", "id", "slice", "tag", "conditions", "metric", "measured", "predicted", "error",
               "reference", "reference_error", "route", "deployment", "refused", "detail", "reference_note",
               "unit", "source")  # fmt: skip


def write_csv(path: Path, results: Sequence[SuiteResult]) -> None:
    """One line per row and metric (refused rows included, with their reason)."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for res in results:
            for r in res.rows:
                for k in res.metrics:
                    w.writerow([
                        r.suite, r.id, r.slice, r.tag, r.conditions, k, r.measured.get(k), r.predicted.get(k),
                        r.error(k), r.reference.get(k), r.reference_error(k), r.route, r.deployment, r.refused or "",
                        r.detail, r.reference_note, r.unit, r.source,
                    ])  # fmt: skip


def as_json(results: Sequence[SuiteResult]) -> str:
    out = {}
    for res in results:
        overall, slices = res.summary()
        out[res.name] = {
            "preamble": res.preamble,
            "overall": _stats_json(overall),
            "slices": [_stats_json(s) for s in slices],
            "rows": [r.to_dict() for r in res.rows],
        }
    return json.dumps(out, indent=1, default=str)


def _stats_json(s: SliceStats) -> dict:
    return {
        "slice": s.name,
        "rows": s.rows,
        "predicted": s.predicted,
        "refused": dict(s.refused),
        "metrics": {k: vars(m) for k, m in s.metrics.items()},
        "reference_predicted": s.reference_predicted,
        "reference_all": {k: vars(m) for k, m in s.reference_all.items()},
        "reference_shared": {k: vars(m) for k, m in s.reference.items()},
        "twin_shared": {k: vars(m) for k, m in s.twin_on_shared.items()},
    }
