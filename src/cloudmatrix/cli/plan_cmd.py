"""`cloudmatrix plan`: the SLO-aware deployment search (docs/plan.md)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cloudmatrix.errors import CloudMatrixError


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_cmd)


def plan_cmd(
    config: Annotated[Path | None, typer.Argument(help="Optional plan-request TOML (flags given override it)")] = None,
    model: Annotated[str | None, typer.Option(help="Model from the catalog or a config.json path")] = None,
    system: Annotated[list[str] | None, typer.Option("--system", help="Catalog system; repeat to compare")] = None,
    isl: Annotated[int | None, typer.Option(help="Input tokens per request")] = None,
    osl: Annotated[int | None, typer.Option(help="Output tokens per request")] = None,
    rate: Annotated[float | None, typer.Option(help="Requests/s (open loop, Poisson)")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Closed-loop clients")] = None,
    ttft_p90: Annotated[float | None, typer.Option(help="TTFT p90 target, seconds")] = None,
    tpot_p90: Annotated[float | None, typer.Option(help="TPOT p90 target, seconds")] = None,
    chips: Annotated[int | None, typer.Option(help="Use at most this many chips (HGX: cluster size)")] = None,
    budget_usd: Annotated[float | None, typer.Option(help="Price limit of the chips used, US$")] = None,
    budget_kw: Annotated[float | None, typer.Option(help="Power limit of the chips used, kW")] = None,
    mtp_acceptance: Annotated[float | None, typer.Option(help="Expected per-draft MTP acceptance")] = None,
    max_utilisation: Annotated[float | None, typer.Option(help="Share of a pool's capacity a plan may use")] = None,
    top_k: Annotated[int | None, typer.Option(help="Candidates per system confirmed by simulation")] = None,
    sim_seconds: Annotated[float | None, typer.Option(help="Measured simulated seconds per confirmation")] = None,
    workers: Annotated[int | None, typer.Option(help="Local processes for the confirmations")] = None,
    no_confirm: Annotated[bool, typer.Option("--no-confirm", help="Screen only, no simulation")] = False,
    ray: Annotated[bool, typer.Option("--ray", help="Run confirmations as Ray tasks")] = False,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster address for --ray (default: local)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
    report: Annotated[Path | None, typer.Option(help="Write a self-contained HTML report here")] = None,
    png: Annotated[Path | None, typer.Option(help="Write the Pareto frontier PNG here")] = None,
    out_scenario: Annotated[Path | None, typer.Option(help="Write the best plan as a scenario TOML here")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar")] = False,
) -> None:
    """For this model and traffic, under these latency targets and limits: how to deploy, and what it delivers.

    Screens every layout (pool split, instance size, EP, attention/MoE TP, batch, microbatches, MTP, precision)
    with the cost model in numpy, then confirms the best candidates with the simulator."""
    from cloudmatrix.plan.search.confirm import scenario_toml
    from cloudmatrix.plan.search.planner import run_plan
    from cloudmatrix.plan.search.request import PlanRequest, load_plan_request
    from cloudmatrix.report.plan_report import TABLE_COLUMNS, plan_rows, to_json, write_frontier_png, write_html
    from cloudmatrix.user_input import output_file

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _check_ray_flags(ray, ray_address)
    flags = dict(
        model=model, systems=tuple(system) if system else None, isl=isl, osl=osl, rate=rate, concurrency=concurrency,
        ttft_p90=ttft_p90, tpot_p90=tpot_p90, chips=chips, budget_usd=budget_usd, budget_kw=budget_kw,
        mtp_acceptance=mtp_acceptance, max_utilisation=max_utilisation, top_k=top_k, sim_seconds=sim_seconds,
        workers=workers,
    )  # fmt: skip
    if no_confirm:
        flags["confirm"] = False
    if config is not None:
        req = load_plan_request(config, **flags)
    else:
        req = replace(PlanRequest(), **{k: v for k, v in flags.items() if v is not None}).validate()
    for p, what in ((report, "--report"), (png, "--png"), (out_scenario, "--out-scenario")):
        if p is not None:
            output_file(p, what)
    console = Console(stderr=True)
    show = not (quiet or as_json)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, disable=not show, transient=True,
    ) as bar:  # fmt: skip
        tasks: dict[str, int] = {}

        def progress(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        result = run_plan(req, progress=progress, use_ray=ray, ray_address=ray_address)
    best = [s.best for s in result.systems if s.best is not None]
    if out_scenario is not None:
        out_scenario.write_text(scenario_toml(best[0], req), encoding="utf-8")
    if png is not None:
        write_frontier_png(result, png)
    if report is not None:
        write_html(result, report)
    if as_json:
        typer.echo(json.dumps(to_json(result), indent=2, default=float))
        return
    out = Console(width=100)
    t = Table(title=f"{req.model}: {req.traffic_label()}", show_lines=True)
    for c in TABLE_COLUMNS:
        t.add_column(c, overflow="fold", no_wrap=c == "system")
    for row in plan_rows(result):
        t.add_row(*row)
    out.print(t)
    out.print(
        f"{result.points:,} points screened in {sum(s.screen_s for s in result.systems):.1f} s; "
        f"{sum(len(s.candidates) for s in result.systems)} candidates simulated in {result.confirm_s:.1f} s."
    )
    for s in result.systems:
        if s.best is None and s.diagnosis:
            out.print(s.diagnosis, style="yellow", markup=False, highlight=False)
    if not req.confirm:
        out.print("screen only (--no-confirm): TTFT is an estimate; simulate the plan before relying on it")


def _check_ray_flags(ray: bool, address: str | None) -> None:
    if address and not ray:
        raise CloudMatrixError("--ray-address needs --ray")
