"""`cloudmatrix reproduce`: the paper's DeepSeek-R1 figures, published vs cost model vs simulated."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cloudmatrix.errors import CloudMatrixError


def register(app: typer.Typer) -> None:
    app.command("reproduce")(reproduce_cmd)


def reproduce_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    report: Annotated[Path | None, typer.Option(help="Write the table to a .md or .html file")] = None,
    no_sim: Annotated[bool, typer.Option("--no-sim", help="Cost model only (seconds instead of a minute)")] = False,
    duration_scale: Annotated[float, typer.Option(help="Scale the scenarios' simulated durations")] = 1.0,
) -> None:
    """Reproduce the CloudMatrix-Infer paper's prefill and decode figures and report the error of each."""
    from cloudmatrix.user_input import output_file, positive
    from cloudmatrix.validate.paper import markdown, reproduce

    positive("--duration-scale", duration_scale)
    if report is not None:
        if report.suffix not in (".md", ".html"):
            raise CloudMatrixError(f"--report must end in .md or .html, got {report}")
        output_file(report, "--report")  # before the simulations, so a bad path costs nothing
    rows = reproduce(simulate_scenarios=not no_sim, duration_scale=duration_scale)
    if report is not None:
        md = markdown(rows)
        if report.suffix == ".md":
            report.write_text("# CloudMatrix-Infer paper figures reproduced\n\n" + md + "\n")
        else:
            report.write_text(_html(rows))
    if as_json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    console = Console(width=None if Console().is_terminal else 160)
    t = Table(title="CloudMatrix-Infer on CloudMatrix384, DeepSeek-R1 INT8 (Zuo et al., arXiv 2506.12708 §5)")
    for col in ("figure", "published", "cost model", "error", "simulated", "error"):
        t.add_column(col, justify="left" if col == "figure" else "right")
    for r in rows:

        def colour(e):
            return "–" if e is None else (f"[green]{e:+.1%}[/]" if abs(e) <= 0.10 else f"[red]{e:+.1%}[/]")

        t.add_row(
            f"{r.figure} ({r.unit})",
            f"{r.published:,.2f}",
            f"{r.cost_model:,.2f}",
            colour(r.model_error),
            "–" if r.simulated is None else f"{r.simulated:,.2f}",
            colour(r.sim_error),
        )
    console.print(t)
    for r in rows:
        console.print(f"- [bold]{r.figure}[/]: {r.explanation}")
    if report is not None:
        console.print(f"report: {report}")


def _html(rows) -> str:
    from cloudmatrix.validate.paper import COLUMNS, cells

    head = "".join(f"<th>{h}</th>" for h in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(r)) + "</tr>" for r in rows)
    return (
        "<!doctype html><meta charset='utf-8'><title>cloudmatrix reproduce</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px 8px}"
        "table{border-collapse:collapse}</style><h1>CloudMatrix-Infer paper figures reproduced</h1>"
        f"<table><tr>{head}</tr>{body}</table>"
    )
