"""`cloudmatrix simulate`: run a scenario through the supernode twin and report what it delivers."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cloudmatrix.errors import CloudMatrixError


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_cmd)
    app.command("scenarios")(scenarios_cmd)


def scenarios_cmd() -> None:
    """List the shipped scenarios (run one with `cloudmatrix simulate NAME`)."""
    from cloudmatrix.sim.scenario import load_scenario, scenario_names

    t = Table(title="shipped scenarios")
    t.add_column("name")
    t.add_column("system")
    t.add_column("what")
    for name in scenario_names():
        sc = load_scenario(name)
        t.add_row(name, sc.system, sc.description)
    Console(width=None if Console().is_terminal else 140).print(t)


def parse_sets(sets: list[str]) -> dict[str, Any]:
    """`--set a.b=value` pairs; the value is read as a TOML value (numbers, strings, booleans, tables)."""
    out: dict[str, Any] = {}
    for item in sets:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise CloudMatrixError(f"--set expects KEY=VALUE (e.g. workload.concurrency=8000), got {item!r}")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError as e:
            if raw.lstrip()[:1] in ("{", "[", '"', "'"):
                # meant as a TOML table, array or string: say what is wrong with it, don't pass it on as text
                raise CloudMatrixError(
                    f"--set {key.strip()}: {raw.strip()[:60]!r} is not a valid TOML value ({e}); "
                    "write inline tables on one line, e.g. workload={kind=\"poisson\", rate=150.0}"
                ) from None
            value = raw  # a bare word is a string
        out[key.strip()] = value
    return out


def simulate_cmd(
    scenario: Annotated[str, typer.Argument(help="Scenario TOML file, or a shipped scenario name")] = "default",
    duration: Annotated[float | None, typer.Option(help="Simulated seconds (overrides the scenario)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a scenario key: section.key=value")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
    csv: Annotated[Path | None, typer.Option(help="Write per-request records to this CSV file")] = None,
    plots: Annotated[Path | None, typer.Option(help="Write PNG plots (time series, latency CDFs) here")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar")] = False,
) -> None:
    """Simulate a scenario: tokens/s per chip for prefill and decode, TTFT/TPOT percentiles, goodput."""
    from cloudmatrix.sim.metrics import write_requests_csv
    from cloudmatrix.sim.scenario import load_scenario
    from cloudmatrix.sim.simulation import Simulation

    check_output_paths(csv, plots)
    overrides = parse_sets(set_ or [])
    note = ""
    if duration is not None:
        if not (duration > 0 and math.isfinite(duration)):
            raise CloudMatrixError(f"--duration must be a finite number of seconds > 0, got {duration}")
        overrides["duration"] = duration
        if "warmup" not in overrides:
            # keep the scenario's warm-up share of the run rather than a warm-up longer than the run
            base = load_scenario(scenario, {k: v for k, v in overrides.items() if k != "duration"})
            if base.duration is not None and base.warmup > 0:
                overrides["warmup"] = base.warmup * duration / base.duration
                note = (
                    f"warm-up scaled with --duration: {overrides['warmup']:g} s "
                    f"({base.warmup:g} s of the scenario's {base.duration:g} s); set it with --set warmup=SECONDS"
                )
    sc = load_scenario(scenario, overrides)
    sim = Simulation(sc)
    horizon = sc.duration
    if quiet or as_json or horizon is None:
        res = sim.run()
    else:
        with Progress(
            TextColumn("[bold]simulating[/] {task.description}"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as bar:
            task = bar.add_task(escape(sc.name), total=horizon)  # the description is rendered as markup
            res = sim.run(progress=lambda t: bar.update(task, completed=min(t, horizon)))
    if csv is not None:
        write_requests_csv(csv, res.records)
    if plots is not None:
        from cloudmatrix.sim.metrics import time_series
        from cloudmatrix.sim.plots import plot_latency_cdfs, plot_time_series

        plots.mkdir(parents=True, exist_ok=True)
        ts = time_series(
            res.records,
            bin_s=max(1.0, res.end_time / 300),
            end=res.end_time,
            output_events=res.output_events,
            input_events=res.input_events,
            running_events=res.running_events,
        )
        title = f"{sc.name}: throughput and latency over simulated time"
        plot_time_series(ts, plots / "time_series.png", title=title, warmup=min(sc.warmup, res.end_time))
        start, stop = res.summary["window_s"]
        plot_latency_cdfs(
            res.records, plots / "latency_cdfs.png", title=f"{sc.name}: latency distributions", window=(start, stop)
        )
    res.summary["economics"] = economics(sim, res.summary)
    if as_json:
        from cloudmatrix.sim.metrics import jsonable

        print(json.dumps(jsonable({"scenario": sc.name, **res.summary}), indent=2))
        return
    if note:
        Console().print(note, markup=False, highlight=False)
    print_summary(sc, res.summary)
    if csv is not None:
        Console().print(f"per-request records: {csv}", markup=False)
    if plots is not None:
        Console().print(f"plots: {plots}/time_series.png, {plots}/latency_cdfs.png", markup=False)


def check_output_paths(csv: Path | None, plots: Path | None) -> None:
    """Refuse output paths that cannot be written before any simulation runs."""
    if csv is not None:
        if csv.is_dir():
            raise CloudMatrixError(f"--csv {csv} is a directory; give a file name, e.g. {csv / 'requests.csv'}")
        if not csv.parent.is_dir():
            raise CloudMatrixError(f"--csv {csv}: the directory {csv.parent} does not exist; create it first")
    if plots is not None:
        if plots.exists() and not plots.is_dir():
            raise CloudMatrixError(f"--plots {plots} is a file; give a directory for the PNGs")
        parent = next((p for p in plots.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise CloudMatrixError(f"--plots {plots}: {parent} is a file, not a directory")


def economics(sim, s: dict[str, Any]) -> dict[str, Any]:
    """Energy and money per output token for the chips the scenario uses, pro-rated from the system's
    power and price (plan.economics defaults: 4-year amortisation, $0.08/kWh, PUE 1.3, always serving)."""
    from cloudmatrix.plan.economics import Economics, cost_per_million_tokens

    system = sim.system
    chips = sum(p["chips"] for p in s["pools"].values())
    share = chips / system.chips
    out_tps = s["output_tokens_per_s"]
    econ = Economics()
    result: dict[str, Any] = {"chips_used": chips, "share_of_system": share, "assumptions": econ.__dict__}
    if out_tps > 0:
        cost = cost_per_million_tokens(out_tps, system.price_usd * share, system.power * share, econ)
        result.update(
            usd_per_million_output_tokens=cost.usd_per_million_tokens,
            joules_per_output_token=cost.joules_per_token,
            power_kw=system.power * share / 1e3,
        )
    return result


def _ms(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * 1e3:,.1f}"


def print_summary(sc, s: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(width=None if Console().is_terminal else 120)
    console.print(f"[bold]{escape(sc.name)}[/]: {escape(sc.description or sc.system + ' / ' + sc.model)}")
    w0, w1 = s["window_s"]
    console.print(
        f"simulated {s['simulated_s']:.0f} s, measured over [{w0:.0f}, {w1:.0f}] s; "
        f"{s['requests']['finished_in_window']:,} requests finished in the window, "
        f"{s['requests']['in_flight_at_end']:,} in flight at the end"
    )
    t = Table(title="throughput")
    t.add_column("pool")
    t.add_column("chips", justify="right")
    t.add_column("tokens/s per chip", justify="right")
    t.add_column("tokens/s (pool)", justify="right")
    t.add_column("busy", justify="right")
    t.add_column("notes")
    pools = s["pools"]
    if "prefill" in pools:
        p, d = pools["prefill"], pools["decode"]
        t.add_row(
            "prefill (input)",
            str(p["chips"]),
            f"{s['prefill_tokens_per_s_per_chip']:,.0f}",
            f"{s['input_tokens_per_s']:,.0f}",
            f"{p['utilisation']:.0%}",
            f"{p['steps']:,} batches",
        )
        t.add_row(
            "decode (output)",
            str(d["chips"]),
            f"{s['decode_tokens_per_s_per_chip']:,.0f}",
            f"{s['output_tokens_per_s']:,.0f}",
            f"{d['utilisation']:.0%}",
            f"mean batch {d.get('mean_batch_per_die', 0):.1f}/die, KV {d['kv_occupancy_mean']:.0%} full",
        )
    else:
        c = pools["colocated"]
        t.add_row(
            "colocated input",
            str(c["chips"]),
            f"{s['prefill_tokens_per_s_per_chip']:,.0f}",
            f"{s['input_tokens_per_s']:,.0f}",
            f"{c['utilisation']:.0%}",
            "",
        )
        t.add_row(
            "colocated output",
            str(c["chips"]),
            f"{s['decode_tokens_per_s_per_chip']:,.0f}",
            f"{s['output_tokens_per_s']:,.0f}",
            "",
            f"mean batch {c.get('mean_batch_per_die', 0):.1f}/die, KV {c['kv_occupancy_mean']:.0%} full",
        )
    console.print(t)
    lat = Table(title="latency (ms)")
    for col in ("metric", "mean", "p50", "p90", "p99"):
        lat.add_column(col, justify="left" if col == "metric" else "right")
    for key, label in (
        ("ttft_s", "TTFT"),
        ("tpot_s", "TPOT"),
        ("itl_s", "ITL (mean per request)"),
        ("max_itl_s", "longest gap per request"),
        ("e2e_s", "E2E"),
    ):
        if key in s:
            v = s[key]
            lat.add_row(label, _ms(v["mean"]), _ms(v["p50"]), _ms(v["p90"]), _ms(v["p99"]))
    console.print(lat)
    if "ttft_components_s" in s:
        parts = Table(title="where TTFT goes (ms)")
        for col in ("part", "mean", "p50"):
            parts.add_column(col, justify="left" if col == "part" else "right")
        for key, label in (
            ("front_end", "front end (request, tokenise, detokenise)"),
            ("prefill_queue", "prefill queue"),
            ("prefill", "prefill compute"),
            ("kv_transfer", "KV transfer prefill -> decode"),
            ("decode_slot_wait", "wait for a decode slot"),
        ):
            v = s["ttft_components_s"].get(key)
            if v is not None:
                parts.add_row(label, _ms(v["mean"]), _ms(v["p50"]))
        console.print(parts)
    console.print(f"latency over {s['latency_population']}", markup=False)
    if "goodput_requests_per_s" in s:
        slo = s["slo"]
        parts = [
            f"TTFT <= {slo['ttft_s']:g} s" if slo["ttft_s"] else "",
            f"TPOT <= {slo['tpot_s'] * 1e3:g} ms" if slo["tpot_s"] else "",
        ]
        console.print(
            f"goodput ({', '.join(p for p in parts if p) or 'no SLO'}): "
            f"{s['goodput_requests_per_s']:,.1f} requests/s, {s['slo_attainment']:.1%} of the requests above"
        )
    if "cache" in s:
        c = s["cache"]
        console.print(
            f"caching pool: hit rate {c['hit_rate']:.1%}, {c['prefill_tokens_saved']:,} prompt tokens served "
            f"from the pool"
        )
    console.print(f"KV transferred prefill -> decode: {s['kv_transfer_gb']:,.0f} GB")
    e = s.get("economics", {})
    if "usd_per_million_output_tokens" in e:
        a = e["assumptions"]
        console.print(
            f"economics ({e['chips_used']} chips = {e['share_of_system']:.0%} of the system's price and power; "
            f"{a['years']:g}-year amortisation, ${a['usd_per_kwh']:g}/kWh, PUE {a['pue']:g}): "
            f"${e['usd_per_million_output_tokens']:.3f} per million output tokens, "
            f"{e['joules_per_output_token']:.2f} J per output token"
        )
    if "slo_verdict" in s:
        console.print(s["slo_verdict"], markup=False, highlight=False)
