"""`cloudmatrix specs`: the hardware and model catalog.

  specs hardware [--hardware FILE.toml] [--nodes N]    systems and chips with their key figures
  specs model NAME|PATH [--context N ...] [--json]     architecture, parameters, KV cache, FLOPs
  specs compare SYSTEM SYSTEM [--nodes N] [--json]     system totals and first/second ratios

A thin layer: figures come from cloudmatrix.specs (hardware, model, system_comparison); this module only
converts units for display and lays out tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cloudmatrix.errors import CloudMatrixError


def _console() -> Console:
    # Wide tables: don't squeeze them to 80 columns when the output is piped or captured. No markup: names
    # come from user files and may hold "[" (a chip called "x[/y]" must print, not raise MarkupError).
    c = Console(highlight=False, markup=False)
    return c if c.is_terminal else Console(highlight=False, markup=False, width=160)


def _fmt(x: float, digits: int = 1) -> str:
    return f"{x:,.{digits}f}"


def _ratio(x: float) -> str:
    return f"{x:.2f}x"


# ------------------------------------------------------------------ loading helpers


def _is_system_file(path: Path) -> bool:
    import tomllib

    from cloudmatrix.user_input import read_text

    try:
        return "chip" in tomllib.loads(read_text(path, "--hardware file"))
    except (CloudMatrixError, tomllib.TOMLDecodeError):
        return False  # let the chip loader report the problem


def _system(name: str, nodes: int | None):
    from cloudmatrix.specs.hardware import load_system

    s = load_system(name)
    return s.with_nodes(nodes) if nodes is not None and s.spec.power_per_node is not None else s


def _check_nodes(nodes: int | None, systems: list) -> None:
    if nodes is None:
        return
    if nodes <= 0:
        raise CloudMatrixError(f"--nodes must be a positive integer, got {nodes}")
    if not any(s.spec.power_per_node is not None for s in systems):
        names = ", ".join(s.name for s in systems)
        raise CloudMatrixError(f"--nodes applies to clusters sold by the node (hgx-*); {names} have a fixed size")


# ------------------------------------------------------------------ specs hardware


def _systems_table(systems: list) -> Table:
    from cloudmatrix.specs.system_comparison import summarize

    t = Table(title="Systems (dense BF16; bandwidths one-way)", title_justify="left")
    for col in (
        "system",
        "chips",
        "nodes",
        "BF16 PFLOPS",
        "HBM TB",
        "HBM TB/s",
        "scale-up",
        "GB/s/chip",
        "domain",
        "scale-out Gb/s/chip",
        "power kW",
        "price US$M",
    ):
        t.add_column(col, justify="left" if col in ("system", "chips", "scale-up") else "right")
    for s in systems:
        m = summarize(s)
        t.add_row(
            s.name,
            f"{s.chips} x {s.chip.name}",
            str(s.nodes),
            _fmt(m.peak_flops / 1e15),
            _fmt(m.hbm_capacity / 1e12, 2),
            _fmt(m.hbm_bandwidth / 1e12),
            s.spec.scale_up.name,
            _fmt(s.spec.scale_up.bandwidth_per_chip / 1e9, 0),
            str(s.scale_up_domain_chips),
            _fmt(s.spec.scale_out.bandwidth_per_chip * 8 / 1e9, 0),
            _fmt(m.power / 1e3),
            _fmt(m.price_usd / 1e6, 2),
        )
    return t


def _chips_table(chips: list) -> Table:
    t = Table(title="Chips (dense peaks per chip)", title_justify="left")
    for col in ("chip", "vendor", "dies", "BF16 TFLOPS", "FP8", "INT8 TOPS", "FP4", "HBM GB", "HBM TB/s", "TDP W"):
        t.add_column(col, justify="left" if col in ("chip", "vendor") else "right")
    for c in chips:

        def peak(p: str, c=c) -> str:
            return _fmt(c.die.peak[p] * c.dies / 1e12, 0) if p in c.die.peak else "-"

        t.add_row(
            c.name,
            c.vendor,
            str(c.dies),
            peak("bf16"),
            peak("fp8"),
            peak("int8"),
            peak("fp4"),
            _fmt(c.hbm_capacity / 1e9, 0),
            _fmt(c.hbm_bandwidth / 1e12, 2),
            _fmt(c.tdp, 0) if c.tdp else "-",
        )
    return t


def hardware(
    hardware_file: Annotated[
        list[Path] | None,
        typer.Option("--hardware", help="Also show your own system or chip TOML file (repeatable)."),
    ] = None,
    nodes: Annotated[int | None, typer.Option(help="Node count for clusters sold by the node (hgx-*).")] = None,
) -> None:
    """List the systems and chips in the catalog with their key figures."""
    from cloudmatrix.specs.hardware import catalog_names, load_chip

    systems = [_system(n, nodes) for n in catalog_names("system")]
    chips = [load_chip(n) for n in catalog_names("chip")]
    for f in hardware_file or []:
        if _is_system_file(f):
            s = _system(str(f), nodes)
            systems.append(s)
            if s.chip not in chips:  # equal figures = same chip; a user's variant is shown apart
                chips.append(s.chip)
        else:
            chips.append(load_chip(f))
    _check_nodes(nodes, systems)
    out = _console()
    out.print(_systems_table(systems))
    out.print(_chips_table(chips))


# ------------------------------------------------------------------ specs model

_PRECISIONS = ("bf16", "fp8", "int8", "fp4")


def _model_dict(m, contexts: list[int]) -> dict[str, object]:
    comps = m.components()
    return {
        "name": m.name,
        "model_type": m.model_type,
        "attention": m.attention,
        "layers": m.layers,
        "hidden": m.hidden,
        "heads": m.heads,
        "kv_heads": m.kv_heads,
        "head_dim": m.head_dim,
        "vocab": m.vocab,
        "routed_experts": m.routed_experts,
        "shared_experts": m.shared_experts,
        "top_k": m.top_k,
        "moe_layers": m.moe_layers,
        "dense_layers": m.layers - m.moe_layers,
        "mtp_layers": m.mtp_layers,
        "params": {
            "total": m.total_params(),
            "total_with_mtp": m.total_params(include_mtp=True),
            "activated": m.activated_params(),
            "components": comps,
        },
        "kv_elements_per_token_per_layer": m.kv_elements_per_token_per_layer(),
        "kv_bytes_per_token": {p: m.kv_bytes_per_token(p) for p in ("bf16", "int8")},
        "weight_bytes": {p: m.weight_bytes(p) for p in _PRECISIONS},
        "flops_per_token": {
            str(c): {"decode": m.decode_flops_per_token(c), "prefill": m.prefill_flops_per_token(c)} for c in contexts
        },
    }


def model(
    name: Annotated[str, typer.Argument(help="Catalog name (e.g. deepseek-r1) or a config.json path / folder.")],
    context: Annotated[
        list[int] | None,
        typer.Option("--context", "-c", help="Context lengths for the FLOPs table (repeatable)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Architecture, parameters per component, KV cache and FLOPs per token of a model."""
    from cloudmatrix.specs.model import load_model

    contexts = context or [1024, 4096, 32768]
    if any(c <= 0 for c in contexts):
        raise CloudMatrixError(f"--context values must be positive, got {contexts}")
    m = load_model(name)
    d = _model_dict(m, contexts)
    if as_json:
        typer.echo(json.dumps(d, indent=2))
        return
    out = _console()

    arch = Table(title=f"{m.name} ({m.model_type})", title_justify="left", show_header=False)
    arch.add_column("item")
    arch.add_column("value", justify="right")
    attn = (
        f"MLA: kv_lora_rank {m.kv_lora_rank}, rope {m.qk_rope_head_dim}, q_lora_rank {m.q_lora_rank}"
        if m.attention == "mla"
        else f"GQA: {m.heads} query / {m.kv_heads} KV heads, head_dim {m.head_dim}"
    )
    rows = [
        ("layers", str(m.layers)),
        ("hidden", str(m.hidden)),
        ("attention", attn),
        ("heads", str(m.heads)),
        ("vocab", f"{m.vocab:,}"),
    ]
    if m.is_moe:
        rows += [
            ("experts", f"{m.routed_experts} routed + {m.shared_experts} shared, top-{m.top_k}"),
            ("MoE / dense layers", f"{m.moe_layers} / {m.layers - m.moe_layers}"),
            ("expert width", str(m.moe_intermediate)),
        ]
    if m.layers - m.moe_layers:
        rows.append(("dense FFN width", str(m.intermediate)))
    rows.append(("MTP layers", str(m.mtp_layers)))
    for k, v in rows:
        arch.add_row(k, v)
    out.print(arch)

    params = Table(title="Parameters", title_justify="left")
    params.add_column("component")
    params.add_column("params (B)", justify="right")
    params.add_column("share", justify="right")
    total = m.total_params()
    for k, v in d["params"]["components"].items():
        if v:
            share = "" if k == "mtp" else f"{100 * v / total:.1f}%"
            params.add_row(k + (" (apart)" if k == "mtp" else ""), _fmt(v / 1e9, 2), share)
    params.add_row("total", _fmt(total / 1e9, 2), "100.0%", style="bold")
    params.add_row(
        "activated per token", _fmt(m.activated_params() / 1e9, 2), f"{100 * m.activated_params() / total:.1f}%"
    )
    out.print(params)

    mem = Table(title="Memory", title_justify="left")
    mem.add_column("item")
    for p in _PRECISIONS:
        mem.add_column(p, justify="right")
    weights = "weights GB" + (" (with MTP)" if m.mtp_layers else "") + " (norms, router, embeddings BF16)"
    mem.add_row(weights, *(_fmt(m.weight_bytes(p) / 1e9, 1) for p in _PRECISIONS))
    kv = [m.kv_bytes_per_token(p) for p in _PRECISIONS]
    mem.add_row("KV cache KB per token", *(_fmt(b / 1e3, 1) for b in kv))
    mem.add_row("KV cache GB per 4K-token sequence", *(_fmt(b * 4096 / 1e9, 3) for b in kv))
    out.print(mem)
    out.print(f"KV elements per token per layer: {m.kv_elements_per_token_per_layer()} x {m.layers} layers")

    fl = Table(title="FLOPs per token (GFLOP)", title_justify="left")
    fl.add_column("context")
    fl.add_column("decode", justify="right")
    fl.add_column("prefill (mean over prompt)", justify="right")
    for c in contexts:
        fl.add_row(f"{c:,}", _fmt(m.decode_flops_per_token(c) / 1e9, 1), _fmt(m.prefill_flops_per_token(c) / 1e9, 1))
    out.print(fl)


# ------------------------------------------------------------------ specs compare

_ROWS = (
    ("chips", lambda s: f"{s.chips} x {s.chip}", None),
    ("dense {p} PFLOPS", lambda s: _fmt(s.peak_flops / 1e15), "compute"),
    ("HBM TB", lambda s: _fmt(s.hbm_capacity / 1e12, 2), "memory"),
    ("HBM TB/s", lambda s: _fmt(s.hbm_bandwidth / 1e12), "memory_bandwidth"),
    ("scale-up TB/s (one-way, all chips)", lambda s: _fmt(s.scale_up_bandwidth / 1e12), "scale_up_bandwidth"),
    ("scale-up domain (chips)", lambda s: str(s.scale_up_domain_chips), None),
    ("scale-out TB/s (one-way, all chips)", lambda s: _fmt(s.scale_out_bandwidth / 1e12, 2), "scale_out_bandwidth"),
    ("power kW", lambda s: _fmt(s.power / 1e3), "power"),
    ("price US$M", lambda s: _fmt(s.price_usd / 1e6, 2), "price"),
    ("{p} TFLOPS per kW", lambda s: _fmt(s.flops_per_watt * 1e3 / 1e12), "flops_per_watt"),
    ("US$ per {p} PFLOPS", lambda s: f"{s.usd_per_pflops:,.0f}", "usd_per_pflops"),
)


def compare(
    first: Annotated[str, typer.Argument(help="System name or .toml path (the numerator of the ratios).")],
    second: Annotated[str, typer.Argument(help="System name or .toml path (the denominator).")],
    nodes: Annotated[
        int | None, typer.Option(help="Node count for the clusters sold by the node (hgx-*) in the comparison.")
    ] = None,
    precision: Annotated[str, typer.Option(help="Compute precision for the FLOPS figures.")] = "bf16",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Compare two systems from the catalog: totals and first/second ratios."""
    from cloudmatrix.specs.hardware import load_system
    from cloudmatrix.specs.system_comparison import compare_systems

    raw = [load_system(first), load_system(second)]
    _check_nodes(nodes, raw)
    a, b = (_system(n, nodes) for n in (first, second))
    result = compare_systems(a, b, precision)
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    t = Table(title=f"{a.name} vs {b.name}", title_justify="left")
    t.add_column("")
    t.add_column(a.name, justify="right")
    t.add_column(b.name, justify="right")
    t.add_column("ratio", justify="right")
    p = precision.upper()
    for label, value, ratio in _ROWS:
        t.add_row(
            label.format(p=p), value(result.first), value(result.second), _ratio(result.ratios[ratio]) if ratio else ""
        )
    _console().print(t)


def register(app: typer.Typer) -> None:
    specs = typer.Typer(help="Hardware and model catalog.", no_args_is_help=True)
    specs.command("hardware")(hardware)
    specs.command("model")(model)
    specs.command("compare")(compare)
    app.add_typer(specs, name="specs")
