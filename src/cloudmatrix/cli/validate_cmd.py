"""`cloudmatrix validate`: the twin against public measured sets, row by row, with its error per slice."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table as RichTable

from cloudmatrix.errors import CloudMatrixError


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_cmd)


def validate_cmd(
    suite: Annotated[str, typer.Option(help="paper, silicon or all")] = "all",
    system: Annotated[str | None, typer.Option(help="Silicon rows of one system only (h200_sxm or hgx-h200)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print everything as JSON")] = False,
    report: Annotated[Path | None, typer.Option(help="Write a .md or .html report (HTML: with scatter plots)")] = None,
    csv: Annotated[Path | None, typer.Option("--csv", help="Write one line per row and metric to this CSV")] = None,
    side_by_side: Annotated[
        bool, typer.Option("--side-by-side", help="Add aiconfigurator's own estimate of each silicon row")
    ] = False,
    workers: Annotated[int | None, typer.Option(help="Processes for the silicon suite (default: all CPUs)")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N silicon points (a quick look)")] = None,
    silicon_csv: Annotated[
        Path | None, typer.Option(help="A silicon_sample-format CSV instead of the installed one")
    ] = None,
    no_sim: Annotated[bool, typer.Option("--no-sim", help="Paper suite: cost model only, no simulation")] = False,
) -> None:
    """Compare the twin with published measurements: per row, per slice (system x backend x mode), overall."""
    from cloudmatrix.report.validate_report import SuiteResult, html_report, markdown, tables, write_csv
    from cloudmatrix.report.validate_report import as_json as to_json

    if suite not in ("paper", "silicon", "all"):
        raise CloudMatrixError(f"--suite must be paper, silicon or all, got {suite!r}")
    if report is not None and report.suffix not in (".md", ".html"):
        raise CloudMatrixError(f"--report must end in .md or .html, got {report}")
    if workers is not None and workers < 1:
        raise CloudMatrixError(f"--workers must be at least 1, got {workers}")
    if limit is not None and limit < 1:
        raise CloudMatrixError(f"--limit must be at least 1, got {limit}")
    if side_by_side and suite == "paper":
        raise CloudMatrixError("--side-by-side compares with aiconfigurator on the silicon suite; use --suite silicon")
    if side_by_side:
        from cloudmatrix.validate.aic_estimate import require_aic

        require_aic()
    console = Console(width=None if Console().is_terminal else 200)
    quiet = as_json or not Console(stderr=True).is_terminal
    results: list[SuiteResult] = []
    if suite in ("silicon", "all"):
        results.append(_silicon(system, workers, limit, silicon_csv, side_by_side, quiet))
    if suite in ("paper", "all"):
        results.append(_paper(no_sim))
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        write_csv(csv, results)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        header = f"command: cloudmatrix validate --suite {suite}" + (" --side-by-side" if side_by_side else "")
        report.write_text(markdown(results, header) if report.suffix == ".md" else html_report(results, header))
    if as_json:
        print(to_json(results))
        return
    for res in results:
        console.print(f"[bold]{res.name} suite[/]")
        for line in res.preamble:
            console.print(f"  {line}", highlight=False)
        for t in tables(res):
            rt = RichTable(title=t.title, title_justify="left")
            for i, h in enumerate(t.header):
                rt.add_column(h, justify="left" if i == 0 or h in ("reason", "main refusal") else "right")
            for r in t.rows:
                rt.add_row(*r)
            console.print(rt)
            if t.note:
                console.print(f"  {t.note}", highlight=False)
    for path, what in ((report, "report"), (csv, "rows")):
        if path is not None:
            console.print(f"{what}: {path}")


def _silicon(system, workers, limit, path, side_by_side, quiet):
    from cloudmatrix.report.validate_report import SuiteResult
    from cloudmatrix.validate.silicon import run_silicon, systems_filter
    from cloudmatrix.validate.silicon_csv import PACKAGE, load_silicon_set
    from cloudmatrix.validate.silicon_translate import DATA_REASONS

    data = load_silicon_set(path)
    points = systems_filter(data.measurements, system)
    if limit is not None:
        points = points[:limit]
    workers = workers or os.cpu_count() or 1
    if quiet:
        rows = run_silicon(points, workers, side_by_side=side_by_side)
    else:
        with Progress(
            TextColumn("[bold]silicon[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as bar:
            task = bar.add_task("rows", total=len(points))
            rows = run_silicon(
                points, workers, progress=lambda d, n: bar.update(task, completed=d), side_by_side=side_by_side
            )
    try:
        version = f" ({PACKAGE} {metadata.version('aiconfigurator-core')})" if path is None else ""
    except metadata.PackageNotFoundError:
        version = ""
    distinct = sum(m.repeats for m in data.measurements)
    complete = sum(m.row.complete and m.row.concurrency is not None for m in data.measurements)
    preamble = [
        f"read {data.path}{version}: {data.rows_read:,} rows, {data.deepseek_rows:,} of DeepSeek-V3/R1 "
        f"({data.rows_read - data.deepseek_rows:,} rows of {len(data.other_models)} other models are outside this "
        "suite)",
        f"deduplicated: {distinct:,} distinct measurements after folding copies, {len(data.measurements):,} points "
        f"after folding repeats (median); {complete:,} points have a complete layout and a concurrency",
        f"rows here: {len(points):,}"
        + (f" on {system}" if system else "")
        + (f" (first {limit})" if limit else "")
        + f"; {workers} worker process{'es' if workers > 1 else ''}; "
        f"simulated wall time {sum(r.wall_s for r in rows):,.0f} s",
    ]
    return SuiteResult("silicon", ("ttft", "tpot"), rows, preamble, data_reasons=DATA_REASONS)


def _paper(no_sim: bool):
    from cloudmatrix.report.validate_report import SuiteResult
    from cloudmatrix.validate.paper_suite import METRIC, SOURCE, paper_rows

    rows = paper_rows(simulate=not no_sim)
    preamble = [
        f"source: {SOURCE}",
        "each published figure twice: the cost model at the paper's operating point, and the simulator on the "
        "shipped scenario" + (" (skipped: --no-sim)" if no_sim else ""),
    ]
    return SuiteResult("paper", (METRIC,), rows, preamble, scale=1.0, unit="as published")
