"""`cloudmatrix compare`: does CloudMatrix384 beat GB200 NVL72 (and HGX clusters), and at what cost?"""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.plan.cross_system import DEFAULT_SYSTEMS, ServingTarget, SystemResult, evaluate_systems
from cloudmatrix.plan.economics import Economics


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_cmd)


def compare_cmd(
    systems: Annotated[
        str, typer.Option(help="Comma-separated catalog systems; ':fp8'/':fp4'/':int8' overrides the precision")
    ] = ",".join(DEFAULT_SYSTEMS),
    model: Annotated[str, typer.Option(help="Model name from the catalog, or a config.json path")] = "deepseek-r1",
    input_len: Annotated[int, typer.Option(help="Prompt tokens per request")] = 4096,
    output_len: Annotated[int, typer.Option(help="Output tokens per request")] = 256,
    tpot_slo: Annotated[float, typer.Option(help="TPOT target in seconds")] = 0.05,
    years: Annotated[float, typer.Option(help="Years over which the hardware price is amortised")] = 4.0,
    usd_per_kwh: Annotated[float, typer.Option(help="Electricity price, $/kWh")] = 0.08,
    pue: Annotated[float, typer.Option(help="Power usage effectiveness (facility / IT power)")] = 1.3,
    utilisation: Annotated[float, typer.Option(help="Fraction of the time serving at the modelled rate")] = 1.0,
    out: Annotated[str, typer.Option(help="Directory for the PNGs and the HTML report")] = "out/compare",
    wide: Annotated[bool, typer.Option("--wide", help="One table with every column (needs ~240 columns)")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
    with_plan: Annotated[
        bool, typer.Option("--with-plan", help="Also the best plan of `cloudmatrix plan` (screen only) per system")
    ] = False,
) -> None:
    """One workload on several systems: output tokens/s per chip, per kW and per $M, $ and J per token.

    Per system: the best decode batch under the TPOT SLO, the prefill rate, the balanced pool split, then the
    whole system's output, cost and energy; writes PNGs and an HTML report with every figure."""
    from cloudmatrix.user_input import output_dir

    names = [s.strip() for s in systems.split(",") if s.strip()]
    if not names:
        raise CloudMatrixError("--systems is empty; give comma-separated names, e.g. cloudmatrix384,gb200-nvl72")
    target = ServingTarget(model=model, input_len=input_len, output_len=output_len, tpot_slo=tpot_slo)
    econ = Economics(years=years, usd_per_kwh=usd_per_kwh, pue=pue, utilisation=utilisation)
    target.validate()
    econ.validate()
    out_dir = output_dir(out, "--out")  # before the sweep, so a bad path costs nothing
    results = evaluate_systems(names, target, econ)
    planned = planner_best(names, target) if with_plan else None
    from cloudmatrix.report.cross_system_report import write_report  # matplotlib only when writing figures

    paths = write_report(results, target, econ, out_dir)
    if as_json:
        print(
            json.dumps(
                {
                    "workload": {**target.__dict__, "kv_len": target.kv_len},
                    "economics": econ.__dict__,
                    "systems": [r.to_dict() for r in results],
                    "files": [str(p) for p in paths],
                    **({"planner": planned} if planned is not None else {}),
                },
                indent=2,
            )
        )
        return
    console = _console(wide)
    print_tables(results, target, econ, console, wide)
    if planned is not None:
        print_planner_table(results, planned, console)
    console.print(Text(f"wrote {', '.join(str(p) for p in paths)}"))


def planner_best(names: list[str], target: ServingTarget) -> list[dict]:
    """Per system, the planner's best plan for the same workload and TPOT target (capacity mode, TTFT p90
    <= 10 s, screen only: `cloudmatrix plan` confirms by simulation), or why there is none."""
    from cloudmatrix.plan.layouts import layout_for
    from cloudmatrix.plan.search.planner import plan_system
    from cloudmatrix.plan.search.request import PlanRequest

    out = []
    for name in names:
        system = layout_for(name).system
        req = PlanRequest(model=target.model, systems=(system,), isl=target.input_len, osl=target.output_len,
                          tpot_p90=target.tpot_slo, confirm=False).validate()  # fmt: skip
        try:
            sp = plan_system(system, req)
        except CloudMatrixError as e:
            out.append({"system": name, "plan": None, "why": str(e)})
            continue
        out.append({"system": name, "plan": None if sp.best is None else sp.best.to_dict(),
                    "label": "" if sp.best is None else sp.best.label(), "why": sp.diagnosis})  # fmt: skip
    return out


def print_planner_table(results: list[SystemResult], planned: list[dict], console: Console) -> None:
    t = Table(title=Text("published layout vs the planner's best plan (screen only; per chip used)"))
    for h in ("system", "published\nout tok/s/chip", "planner\nout tok/s/chip", "planner's plan"):
        t.add_column(h, justify="left" if h in ("system", "planner's plan") else "right", overflow="fold")
    for r, p in zip(results, planned, strict=True):
        plan = p["plan"]
        got = "-" if plan is None else f"{plan['screen']['output_tokens_per_s_per_chip']:,.0f}"
        t.add_row(Text(r.layout.key), Text(f"{r.output_tokens_per_s_per_chip:,.0f}"), Text(got),
                  Text(p.get("label") or p.get("why") or ""))  # fmt: skip
    console.print(t)


# Terminal tables: (column of the full table, compact two-line header). The HTML report keeps every column.
PERFORMANCE = (
    ("system", "system"),
    ("chips", "chips"),
    ("decode inst.", "decode\ninstance"),
    ("batch/die", "batch\n/die"),
    ("TPOT ms", "TPOT\nms"),
    ("decode tok/s/chip", "decode\ntok/s/chip"),
    ("prefill tok/s/chip", "prefill\ntok/s/chip"),
    ("HBM free GB/die", "HBM free\nGB/die"),
)
ECONOMICS = (
    ("system", "system"),
    ("split P+D (idle)", "chips P+D\n(idle)"),
    ("out tok/s/chip", "output\ntok/s/chip"),
    ("out tok/s/system", "output\ntok/s/system"),
    ("tok/s per kW", "tok/s\nper kW"),
    ("tok/s per $M", "tok/s\nper $M"),
    ("$/M out tok", "$ per M\nout tok"),
    ("J/out tok", "J per\nout tok"),
)
TERMINAL_WIDTH = 100  # when the output is not a terminal and COLUMNS is unset


def _console(wide: bool) -> Console:
    if wide:
        return Console(width=240)
    if Console().is_terminal or "COLUMNS" in os.environ:
        return Console()
    return Console(width=TERMINAL_WIDTH)


def _table(title: str, columns, rows: list[dict[str, str]]) -> Table:
    t = Table(title=Text(title))
    for key, header in columns:
        t.add_column(header, justify="left" if key == "system" else "right", no_wrap=key == "system")
    for row in rows:
        t.add_row(*(Text(row[key]) for key, _ in columns))
    return t


def print_tables(
    results: list[SystemResult], target: ServingTarget, econ: Economics, console: Console, wide: bool = False
) -> None:
    """Two tables that fit 100 columns (decode and prefill per chip; the balanced system and its cost), or with
    `wide` the full table."""
    from cloudmatrix.report.cross_system_report import COLUMNS, table_rows

    rows = [dict(zip(COLUMNS, r, strict=True)) for r in table_rows(results)]
    workload = (
        f"{target.model}: {target.input_len:,} in / {target.output_len:,} out tokens, TPOT <= "
        f"{target.tpot_slo * 1e3:g} ms"
    )
    money = (
        f"{econ.years:g}-year amortisation, ${econ.usd_per_kwh:g}/kWh, PUE {econ.pue:g}, "
        f"utilisation {econ.utilisation:.0%}"
    )
    if wide:
        console.print(_table(f"{workload}; {money}", [(c, c) for c in COLUMNS], rows))
    else:
        console.print(_table(f"{workload}: best decode batch, prefill rate", PERFORMANCE, rows))
        console.print(_table(f"whole system, pools balanced; {money}", ECONOMICS, rows))
    console.print(
        "[dim]Same cost model for every system; its error against published measurements differs per system "
        "(`cloudmatrix validate`, docs/accuracy.md): trust ratios more than absolute numbers. Every column: --wide "
        "or the HTML report.[/]"
    )
