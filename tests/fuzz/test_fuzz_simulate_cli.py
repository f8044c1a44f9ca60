"""Fuzz `simulate` over the shipped scenarios, `--set` overrides and edited scenario files, with short runs.

A run must exit 0 with figures a user can trust (finite; utilisation, KV occupancy and SLO attainment within
[0, 1]; percentiles ordered; every request counted once) or exit 2 with one error line.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from importlib import resources
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from .harness import check_outcome, fuzz, load_json, run_cli, walk
from .strategies import EDGE_TOML, toml_choice, toml_number

SCENARIO_DIR = Path(str(resources.files("cloudmatrix.sim") / "scenarios"))
SCENARIOS = sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))
SCENARIO_TEXTS = tuple((SCENARIO_DIR / f"{name}.toml").read_text() for name in SCENARIOS)  # read once

# --set keys with values around their valid ranges; sizes stay small enough for a sub-second run
OVERRIDES = {
    "warmup": toml_number(0, 4),
    "seed": toml_number(-2, 2**40, integer=True),
    "workload.seed": toml_number(-2, 2**40, integer=True),
    "experts.seed": toml_number(-2, 2**40, integer=True),
    "experts.popularity": toml_choice("uniform", "zipf"),
    "experts.zipf_s": toml_number(0, 3),
    "experts.placement": toml_choice("eplb", "none", "perfect"),
    "prefill.instances": toml_number(1, 8, integer=True),
    "prefill.tokens_per_die": toml_number(1, 16384, integer=True),
    "prefill.policy": toml_choice("fcfs", "shortest"),
    "decode.instances": toml_number(1, 2, integer=True),
    "decode.batch_per_die": toml_number(1, 128, integer=True),
    "decode.ep": st.sampled_from(("7", "32", "160", "320")),
    "decode.microbatches": toml_number(1, 2, integer=True),
    "mtp.depth": toml_number(0, 2, integer=True),
    "mtp.acceptance": toml_number(0, 1),
    "slo.ttft": toml_number(0.01, 20),
    "slo.tpot": toml_number(0.001, 0.2),
    "workload.concurrency": toml_number(1, 4000, integer=True),
    "workload.num_requests": toml_number(1, 20000, integer=True),
    "workload.output_len": st.one_of(
        toml_number(1, 2048, integer=True),
        st.tuples(st.integers(-5, 3000), st.integers(-5, 3000)).map(
            lambda t: f'{{ kind = "uniform", lo = {t[0]}, hi = {t[1]} }}'
        ),
    ),
    "workload.kind": toml_choice("poisson", "gamma", "closed"),
    "workload.rate": toml_number(0.1, 400),
    "workload.cv": toml_number(0.1, 5),
    "workload.input_len": st.one_of(
        toml_number(1, 8192, integer=True),
        st.tuples(st.integers(-5, 8192), st.sampled_from(("0.1", "1", "3", "nan"))).map(
            lambda t: f'{{ kind = "lognormal", mean = {t[0]}, cv = {t[1]}, max = 16384 }}'
        ),
    ),
    "caching.capacity_gb": toml_number(0.001, 1e4),
    "caching.block_size": toml_number(1, 1024, integer=True),
    "kv_block_size": toml_number(1, 4096, integer=True),
    "caching.enabled": st.sampled_from(("true", "false", '"yes"')),
    "name": st.sampled_from(('"[/x]"', '"[bold]run"', '"ok"')),
    "decode.not_a_key": st.just("1"),
    "duration.x": st.just("1"),
}


@st.composite
def overrides(draw) -> list[str]:
    keys = draw(st.lists(st.sampled_from(sorted(OVERRIDES)), unique=True, max_size=3))
    return [f"--set={k}={draw(OVERRIDES[k])}" for k in keys]


def run_args(draw, scenario: str) -> tuple[str, ...]:
    duration = draw(st.sampled_from(("2", "5", "8", "20", "0.5", "1e-9", "0", "-1", "nan", "inf")))
    # usually a warm-up shorter than the run, so that most examples measure something
    warmup = draw(st.sampled_from(("--set=warmup=0", "--set=warmup=1", "--set=warmup=5", None)))
    # one run in five prints the tables instead of JSON: user text (a scenario name) must not break them
    output = "--json" if draw(st.integers(0, 4)) else "--quiet"
    args = ("simulate", scenario, f"--duration={duration}", output, "--quiet", *draw(overrides()))
    return args + ((warmup,) if warmup and not any(a.startswith("--set=warmup=") for a in args) else ())


def check_summary(d: dict) -> None:
    for path, key, v in walk(d):
        if isinstance(v, float):
            assert math.isfinite(v), f"{path}.{key} = {v}"
        if key in ("utilisation", "kv_occupancy_mean", "slo_attainment", "hit_rate") and v is not None:
            assert 0 <= v <= 1 + 1e-9, f"{path}.{key} = {v}"
        if "tokens_per_s" in key and isinstance(v, int | float):
            assert v >= 0, f"{path}.{key} = {v}"
        if isinstance(v, dict) and {"p50", "p90", "p99"} <= set(v) and v["p50"] is not None:
            assert 0 <= v["p50"] <= v["p90"] <= v["p99"], f"{path}.{key} = {v}"
    r = d["requests"]
    assert 0 <= r["arrived_in_window"] <= r["total"] and 0 <= r["unfinished"] <= r["total"]
    finished = r["total"] - r["unfinished"]
    assert 0 <= r["finished_in_window"] <= finished
    if {"in_flight_at_end", "never_issued"} <= set(r):
        # at the window's end each request has finished, is in flight or was never issued, exactly once
        open_at_end = r["in_flight_at_end"] + r["never_issued"]
        if d["window_s"][0] == 0:
            assert r["finished_in_window"] + open_at_end == r["total"], r
        assert r["finished_in_window"] + open_at_end <= r["total"], r
        assert r["unfinished"] <= open_at_end, r  # running on after the window only finishes more
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        if key in d:
            assert d[key]["count"] <= finished, (key, d[key]["count"], finished)
    if "goodput_requests_per_s" in d:  # good requests come from the window's arrivals or its finishes
        span = d["window_s"][1] - d["window_s"][0]
        assert 0 <= d["goodput_requests_per_s"] * span <= max(r["arrived_in_window"], r["finished_in_window"]) + 1e-6


@fuzz(ci_examples=25)
@given(st.data())
def test_simulate_shipped_scenarios_with_overrides(data):
    args = run_args(data.draw, data.draw(st.sampled_from(SCENARIOS)))
    code, out, err = run_cli(*args)
    if check_outcome(args, code, out, err) and "--json" in args:
        check_summary(load_json(out))


@fuzz(ci_examples=6)
@given(
    st.sampled_from(("new/records.csv", "records.csv", ".", "FILE/records.csv", "FILE")),
    st.sampled_from((None, "plots", "FILE", "FILE/plots")),
)
def test_simulate_output_paths(tmp_path_factory, csv, plots):
    base = tmp_path_factory.mktemp("simulate-out")
    (base / "FILE").write_text("")
    args = ("simulate", "paper-decode", "--duration=2", "--set=warmup=0", "--quiet", f"--csv={base / csv}")
    if plots is not None:
        args += (f"--plots={base / plots}",)
    code, out, err = run_cli(*args)
    if check_outcome(args, code, out, err):
        assert (base / csv).read_text().count("\n") >= 1  # at least the header
        if plots is not None:
            assert sorted(p.suffix for p in (base / plots).iterdir()) == [".png", ".png"]


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def to_toml(data: dict) -> str:
    """A scenario dict as TOML: top-level scalars, then one [section] per table (nested tables inline)."""
    top = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    sections = [
        f"[{k}]\n" + "\n".join(f"{kk} = {_toml_value(vv)}" for kk, vv in v.items())
        for k, v in data.items()
        if isinstance(v, dict)
    ]
    return "\n".join(top) + "\n\n" + "\n\n".join(sections) + "\n"


@st.composite
def edited_scenario(draw) -> bytes:
    data = tomllib.loads(draw(st.sampled_from(SCENARIO_TEXTS)))
    for _ in range(draw(st.integers(1, 2))):
        section = draw(st.sampled_from(sorted(data)))
        action = draw(st.sampled_from(("edit", "edit", "drop", "drop-section", "extra")))
        if action == "drop-section":
            data.pop(section)
        elif isinstance(data[section], dict) and data[section]:
            key = draw(st.sampled_from(sorted(data[section])))
            if action == "drop":
                data[section].pop(key)
            elif action == "extra":
                data[section]["unknown_key"] = 1
            else:
                data[section][key] = tomllib.loads(f"v = {draw(st.sampled_from(EDGE_TOML))}")["v"]
        elif action == "edit":
            data[section] = tomllib.loads(f"v = {draw(st.sampled_from(EDGE_TOML))}")["v"]
    text = to_toml(data).encode()
    if draw(st.integers(0, 14)) == 0:
        text = text.replace(b"name = ", b"name = \xff", 1)  # not UTF-8
    return text


@fuzz(ci_examples=12)
@given(edited_scenario(), st.data())
def test_simulate_edited_scenario_files(tmp_path_factory, text, data):
    path = tmp_path_factory.getbasetemp() / f"{hashlib.sha1(text).hexdigest()[:16]}.toml"
    path.write_bytes(text)
    args = run_args(data.draw, str(path))
    code, out, err = run_cli(*args)
    if check_outcome(args, code, out, err) and "--json" in args:
        check_summary(load_json(out))
