"""Fuzz `step`, `compare` and `reproduce --no-sim`: exit 0 with finite, consistent figures, or one error line."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from .harness import assert_finite, check_outcome, fuzz, load_json, run_cli
from .strategies import flags, float_text, int_text

SYSTEMS = ("cloudmatrix384", "gb200-nvl72", "hgx-h800", "hgx-b200", "gb300-nvl72", "no-such-system")
MODELS = ("deepseek-r1", "qwen3-30b-a3b", "llama-3.1-70b", "kimi-k2", "no-such-model")

STEP_FLAGS = {
    "system": st.sampled_from(SYSTEMS),
    "model": st.sampled_from(MODELS),
    "phase": st.sampled_from(("decode", "prefill", "train")),
    "dies": int_text(8, 32, 64, 72, 160, 320, 7),
    "ep": int_text(1, 8, 16, 32, 64, 72, 144, 160, 320, 7),
    "shared-expert-dies": int_text(1, 8, 32, 400),
    "redundant-experts": int_text(1, 8, 32, 64, 3),
    "batch-per-die": float_text(0.5, 512),
    "kv-len": float_text(0, 131072),
    "tokens-per-die": float_text(1, 65536),
    "prompt-len": float_text(1, 131072),
    "attn-tp": int_text(1, 2, 4, 8, 3),
    "mtp": int_text(1, 2, 3),
    "mtp-acceptance": float_text(0, 1),
    "microbatches": int_text(1, 2, 3),
    "precision": st.sampled_from(("int8", "fp8", "fp4", "bf16", "fp3")),
    "kv-precision": st.sampled_from(("bf16", "int8", "fp8", "fp4", "fp3")),
    "imbalance": float_text(1, 8),
    "popularity": st.sampled_from(("uniform", "zipf")),
    "zipf-s": float_text(0, 3),
    "placement": st.sampled_from(("eplb", "none", "perfect", "best")),
    "nodes": int_text(1, 2, 9, 18, 66),
}


def check_step(d: dict) -> None:
    assert_finite(d)
    assert d["step_time_s"] > 0 and d["serial_time_s"] > 0
    # the physical floor (every op at peak, communication hidden) is never beaten
    assert d["limit_time_s"] <= d["step_time_s"] * (1 + 1e-9)
    assert 0 < d["tokens_per_s_per_chip"] <= d["limit_tokens_per_s_per_chip"] * (1 + 1e-9)
    assert all(v >= 0 for v in d["memory_bytes_per_die"].values())
    for op in d["ops"]:
        assert op["time"] >= 0 and op["flops"] >= 0 and op["bytes"] >= 0 and op["runs"] >= 0, op
    if d["phase"] == "decode":
        assert d["tpot_s"] > 0


@fuzz(ci_examples=60)
@given(flags(STEP_FLAGS, max_size=5))
def test_step(args):
    args = ("step", *args, "--json")
    code, out, err = run_cli(*args)
    if check_outcome(args, code, out, err):
        check_step(load_json(out))


COMPARE_FLAGS = {
    "systems": st.sampled_from(
        (
            "gb200-nvl72",
            "cloudmatrix384",
            "hgx-h800",
            "gb200-nvl72:fp8",
            "gb300-nvl72:fp4",
            "hgx-b200",
            "gb200-nvl72,hgx-h800",
            "foo",
            ",",
            "gb200-nvl72:fp3",
        )
    ),
    "model": st.sampled_from(("deepseek-r1", "kimi-k2", "qwen3-235b-a22b")),
    "input-len": int_text(1, 128, 1024, 4096, 32768),
    "output-len": int_text(1, 64, 256, 4096),
    "tpot-slo": float_text(0.001, 1.0),
    "years": float_text(0.1, 20),
    "usd-per-kwh": float_text(0.001, 1),
    "pue": float_text(0.5, 3),
    "utilisation": float_text(0, 1.5),
}


def check_compare(d: dict) -> None:
    assert_finite(d)
    slo = d["workload"]["tpot_slo"]
    for s in d["systems"]:
        assert 0 < s["tpot_s"] <= slo * (1 + 1e-9), s
        sp = s["split"]
        assert sp["prefill_chips"] + sp["decode_chips"] + sp["idle_chips"] == s["chips"]
        assert min(sp["prefill_chips"], sp["decode_chips"]) > 0 and sp["idle_chips"] >= 0
        assert 0 < sp["ideal_prefill_fraction"] < 1
        assert math.isclose(s["output_tokens_per_s"], s["output_tokens_per_s_per_chip"] * s["chips"], rel_tol=1e-9)
        for key in (
            "output_tokens_per_s",
            "usd_per_million_output_tokens",
            "joules_per_output_token",
            "decode_tokens_per_s_per_chip",
            "prefill_tokens_per_s_per_chip",
        ):
            assert s[key] > 0, (key, s[key])


@fuzz(ci_examples=12)
@given(flags(COMPARE_FLAGS, max_size=3), st.booleans())
def test_compare(tmp_path_factory, args, out_is_a_file):
    out = tmp_path_factory.mktemp("compare")
    if out_is_a_file:
        out = out / "a-file"
        out.write_text("")
    args = ("compare", *args, f"--out={out}", "--json")
    code, stdout, err = run_cli(*args)
    if check_outcome(args, code, stdout, err):
        assert not out_is_a_file
        check_compare(load_json(stdout))


@fuzz(ci_examples=10)
@given(float_text(0.01, 3), st.sampled_from((None, "r.md", "r.html", "r.txt", "FILE/r.md", "new/r.md", ".")))
def test_reproduce_cost_model_only(tmp_path_factory, scale, report):
    base = tmp_path_factory.mktemp("reproduce")
    (base / "FILE").write_text("")
    args = ("reproduce", "--no-sim", f"--duration-scale={scale}", "--json")
    if report is not None:
        args += (f"--report={base / report}",)
    code, out, err = run_cli(*args)
    if check_outcome(args, code, out, err):
        rows = load_json(out)
        assert rows and all(r["published"] > 0 and r["cost_model"] > 0 for r in rows)
        assert_finite(rows)
        if report is not None:
            assert (base / report).read_text()
