"""`cloudmatrix step`: what one prefill or decode step costs, op by op."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cloudmatrix.perf import StepBreakdown, decode_step, prefill_step
from cloudmatrix.perf.deployment import Deployment, build_deployment
from cloudmatrix.specs.hardware import load_system
from cloudmatrix.specs.model import load_model


def register(app: typer.Typer) -> None:
    app.command("step")(step)


def step(
    system: Annotated[str, typer.Option(help="System name from the catalog, or a path to a system .toml")] = (
        "cloudmatrix384"
    ),
    model: Annotated[str, typer.Option(help="Model name from the catalog, or a config.json path")] = "deepseek-r1",
    phase: Annotated[str, typer.Option(help="decode or prefill")] = "decode",
    dies: Annotated[int | None, typer.Option(help="Dies in the instance (default: EP x MoE TP)")] = None,
    ep: Annotated[int, typer.Option(help="Expert-parallel degree in dies")] = 320,
    shared_expert_dies: Annotated[int | None, typer.Option(help="Dies holding only shared experts (default: auto)")] = (
        None
    ),
    redundant_experts: Annotated[int | None, typer.Option(help="Redundant routed experts (default: auto)")] = None,
    batch_per_die: Annotated[float, typer.Option(help="Decode: sequences per die")] = 48,
    kv_len: Annotated[float, typer.Option(help="Decode: mean KV length (tokens)")] = 4096,
    tokens_per_die: Annotated[float, typer.Option(help="Prefill: tokens per die per batch")] = 8192,
    prompt_len: Annotated[float, typer.Option(help="Prefill: prompt length (tokens)")] = 4096,
    attn_tp: Annotated[int, typer.Option(help="Attention TP degree (heads split; prefill MLA SP-TP-SP)")] = 1,
    moe_tp: Annotated[int, typer.Option(help="MoE TP degree (each expert split over this many dies)")] = 1,
    mtp: Annotated[int, typer.Option(help="MTP depth (speculative tokens per step)")] = 1,
    mtp_acceptance: Annotated[float, typer.Option(help="Acceptance rate of each MTP draft")] = 0.7,
    microbatches: Annotated[int, typer.Option(help="1 or 2")] = 2,
    precision: Annotated[str, typer.Option(help="Weights/dispatch: int8, fp8, fp4 or bf16")] = "int8",
    kv_precision: Annotated[str, typer.Option(help="KV cache precision")] = "bf16",
    backend: Annotated[
        str | None,
        typer.Option(
            help="Serving stack: trtllm, sglang, vllm, cloudmatrix-infer, engine or a profile .toml "
            "(its kernel curves, graphed/eager phases, host cost per op); default: cloudmatrix-infer"
        ),
    ] = None,
    imbalance: Annotated[
        float | None,
        typer.Option(help="Expert load, busiest die / mean (1.0 = perfect); default: derived from --popularity"),
    ] = None,
    popularity: Annotated[str, typer.Option(help="Expert popularity: uniform, zipf, or a CSV/JSON file")] = "uniform",
    zipf_s: Annotated[float, typer.Option(help="Zipf exponent for --popularity zipf")] = 1.0,
    placement: Annotated[str, typer.Option(help="Expert placement: eplb, none or perfect")] = "eplb",
    placement_from: Annotated[
        str | None,
        typer.Option(
            help="Expert statistics (CSV/JSON, or SGLang's per-layer dump) the placement was computed from, when "
            "not the served traffic's (--popularity)"
        ),
    ] = None,
    nodes: Annotated[int | None, typer.Option(help="Node count for clusters sold by the node (HGX)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables")] = False,
) -> None:
    """Cost one decode or prefill step of one instance: op table, bounds, tokens/s per chip, roofline limit."""
    from cloudmatrix.errors import CloudMatrixError

    check_flags(
        dies=dies,
        ep=ep,
        attn_tp=attn_tp,
        moe_tp=moe_tp,
        mtp=mtp,
        mtp_acceptance=mtp_acceptance,
        batch_per_die=batch_per_die,
        kv_len=kv_len,
        tokens_per_die=tokens_per_die,
        prompt_len=prompt_len,
        imbalance=imbalance,
        zipf_s=zipf_s,
        shared_expert_dies=shared_expert_dies,
        redundant_experts=redundant_experts,
        nodes=nodes,
    )
    sysm = load_system(system)
    if nodes is not None:
        sysm = sysm.with_nodes(nodes)
    mdl = load_model(model)
    dep = build_deployment(
        mdl,
        dies=ep * moe_tp if dies is None else dies,
        ep=ep,
        shared_expert_dies=shared_expert_dies,
        redundant_experts=redundant_experts,
        attn_tp=attn_tp,
        moe_tp=moe_tp,
        microbatches=microbatches,
        mtp_depth=mtp,
        mtp_acceptance=mtp_acceptance,
        precision=precision,
        kv_cache=kv_precision,
        backend=backend,
        system=sysm,  # validated before anything is derived from the layout, so errors name the knob
    )
    if imbalance is None:
        # the placement's load statistics: the step takes the imbalance at each microbatch's tokens
        dep = dep.with_(expert_load=derived_expert_load(mdl, dep, popularity, zipf_s, placement, placement_from))
    elif placement_from is not None:
        raise CloudMatrixError("--placement-from derives the imbalance; leave out --imbalance, or --placement-from")
    else:
        dep = dep.with_(imbalance=imbalance)
    if phase == "decode":
        b = decode_step(mdl, sysm, dep, batch_per_die, kv_len)
    elif phase == "prefill":
        b = prefill_step(mdl, sysm, dep, tokens_per_die, prompt_len)
    else:
        raise CloudMatrixError(f"--phase must be 'decode' or 'prefill', got {phase!r}")
    if as_json:
        print(json.dumps(b.to_dict(), indent=2))
        return
    print_breakdown(b, dep)


def check_flags(**flags: float | None) -> None:
    """Every numeric flag finite and in range before anything is costed (NaN and inf never pass)."""
    from cloudmatrix.user_input import finite, positive_int

    for name in ("dies", "ep", "attn_tp", "moe_tp", "nodes"):
        if flags[name] is not None:
            positive_int(f"--{name.replace('_', '-')}", flags[name])
    # upper bounds far past any HBM, so that absurd sizes are an error rather than an overflow deep inside
    for name, most in (("batch_per_die", 1e6), ("tokens_per_die", 1e9), ("prompt_len", 1e9)):
        finite(f"--{name.replace('_', '-')}", flags[name], above=0, maximum=most)
    finite("--kv-len", flags["kv_len"], minimum=0, maximum=1e9)
    finite("--mtp", flags["mtp"], minimum=0)
    finite("--mtp-acceptance", flags["mtp_acceptance"], minimum=0, maximum=1)
    finite("--zipf-s", flags["zipf_s"], minimum=0)
    if flags["imbalance"] is not None:
        # busiest / mean die: one die can carry at most all of the load, EP times the mean
        finite("--imbalance", flags["imbalance"], minimum=1, maximum=flags["ep"])
    for name in ("shared_expert_dies", "redundant_experts"):
        if flags[name] is not None:
            finite(f"--{name.replace('_', '-')}", flags[name], minimum=0)


def derived_expert_load(
    mdl, dep: Deployment, popularity: str, zipf_s: float, placement: str, placement_from: str | None = None
):
    """Expert load statistics of the redundant-expert placement of a popularity (None: dense or no EP);
    `placement_from`: a file of the statistics the placement was computed from, serving `popularity`."""
    from pathlib import Path

    from cloudmatrix.serving.eplb import build_placement
    from cloudmatrix.serving.eplb import popularity as make_popularity

    if not mdl.is_moe or dep.ep_degree <= 1:
        return None
    if popularity in ("uniform", "zipf"):
        pop = make_popularity(popularity, mdl.routed_experts, s=zipf_s)
    else:
        pop = make_popularity("file", mdl.routed_experts, path=str(Path(popularity)))
    placed = None if placement_from is None else make_popularity("file", mdl.routed_experts, path=placement_from)
    pl = build_placement(pop, dep.routed_dies, dep.slots_per_routed_die(mdl), placement, computed_from=placed)
    return pl.expert_load(mdl.top_k)


def print_breakdown(b: StepBreakdown, dep: Deployment, console: Console | None = None) -> None:
    # tables are wide: do not squeeze them into 80 columns when printing to a pipe or a file
    console = console or Console(width=None if Console().is_terminal else 140)
    # names come from user files: escaped, so that "[" in them prints instead of being read as markup
    t = Table(title=f"{b.phase} step: {escape(b.model)} on {escape(b.system)}, per die", show_lines=False)
    for col in ("layer group", "op", "runs", "time ms", "share", "bound", "TFLOP", "GB", "limit ms"):
        t.add_column(col, justify="left" if col in ("layer group", "op", "bound") else "right")
    for r in b.rows:
        t.add_row(
            r.group,
            r.name,
            str(r.runs),
            f"{r.time * 1e3:.2f}",
            f"{r.time / b.serial_time:.1%}",
            r.bound,
            f"{r.flops / 1e12:.2f}",
            f"{r.bytes / 1e9:.2f}",
            f"{r.limit * 1e3:.2f}",
        )
    console.print(t)
    s = Table(show_header=False, box=None)
    s.add_row("serial time (no overlap)", f"{b.serial_time * 1e3:.2f} ms")
    s.add_row(
        f"step time ({dep.microbatches} microbatch{'es' if dep.microbatches > 1 else ''})",
        f"{b.step_time * 1e3:.2f} ms",
    )
    s.add_row("host time issuing the ops (eager phases pace on it)", f"{b.host_time * 1e3:.2f} ms")
    s.add_row("expert imbalance (busiest / mean die)", f"{b.expert_load.get('imbalance', dep.imbalance):.3f}")
    s.add_row("dominant op", f"{b.dominant().group}/{b.dominant().name} ({b.dominant().time / b.serial_time:.0%})")
    if b.phase == "decode":
        s.add_row("sequences per chip", f"{b.seqs_per_die * b.dies_per_chip:g}")
        s.add_row("tokens per step per sequence", f"{b.tokens_per_seq:.2f}")
        s.add_row("TPOT", f"{b.tpot * 1e3:.2f} ms")
    else:
        s.add_row("tokens per chip per batch", f"{b.tokens_per_die * b.dies_per_chip:g}")
    s.add_row("[bold]tokens/s per chip[/]", f"[bold]{b.tokens_per_s_per_chip:,.0f}[/]")
    s.add_row("roofline limit, tokens/s per chip", f"{b.limit_tokens_per_s_per_chip:,.0f}")
    mem = ", ".join(f"{k} {v / 1e9:.1f}" for k, v in b.memory.items())
    s.add_row("HBM per die (GB)", f"{sum(b.memory.values()) / 1e9:.1f} ({mem})")
    console.print(s)
