"""Fuzz the catalog readers through the CLI: mutated HF config.json files (`specs model`, `step --model`),
mutated hardware TOMLs (`specs hardware --hardware`, `step --system`) and `specs compare` flags."""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from .harness import assert_finite, check_outcome, fuzz, load_json, run_cli
from .strategies import EDGE_TOML, JSON_EDGES, int_text

MODELS_DIR = Path(str(resources.files("cloudmatrix.specs") / "catalog" / "models"))
HARDWARE_DIR = Path(str(resources.files("cloudmatrix.specs") / "catalog" / "hardware"))
# read once: the examples must not change if a catalog file changes during the run
MODEL_TEXTS = tuple(p.read_text() for p in sorted(MODELS_DIR.glob("*.json")))
HARDWARE_TEXTS = tuple(p.read_text() for p in sorted(HARDWARE_DIR.glob("*.toml")))
# the fields the readers use, plus one they do not
CONFIG_KEYS = (
    "model_type", "architectures", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "head_dim", "vocab_size", "intermediate_size", "moe_intermediate_size", "n_routed_experts", "num_experts",
    "num_local_experts", "num_experts_per_tok", "n_shared_experts", "shared_expert_intermediate_size",
    "first_k_dense_replace", "moe_layer_freq", "decoder_sparse_step", "mlp_only_layers", "q_lora_rank",
    "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "num_nextn_predict_layers",
    "tie_word_embeddings", "text_config", "unused_field",
)  # fmt: skip


def unique_file(base: Path, data: bytes, suffix: str) -> Path:
    """A file named by its content: the readers cache by path, so new content needs a new name."""
    p = base / f"{hashlib.sha1(data).hexdigest()[:16]}{suffix}"
    p.write_bytes(data)
    return p


@st.composite
def mutated_config(draw) -> bytes:
    cfg = json.loads(draw(st.sampled_from(MODEL_TEXTS)))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(CONFIG_KEYS))
        action = draw(st.sampled_from(("set", "set", "delete", "wrap", "small")))
        if action == "delete":
            cfg.pop(key, None)
        elif action == "wrap":  # a multimodal wrapper holding the LM config
            cfg = {"model_type": "wrapper", "text_config": cfg}
        elif action == "small":  # a plausible but different size
            cfg[key] = draw(st.integers(1, 512))
        else:
            cfg[key] = draw(st.sampled_from(JSON_EDGES))
    data = json.dumps(cfg, allow_nan=True).encode()
    if draw(st.integers(0, 19)) == 0:
        data = data.replace(b'"', b'"\xff', 1)  # not UTF-8
    return data


def check_model(d: dict) -> None:
    assert_finite(d)
    p = d["params"]
    assert 0 < p["activated"] <= p["total"] <= p["total_with_mtp"]
    assert all(v >= 0 for v in p["components"].values())
    assert all(v > 0 for v in d["weight_bytes"].values())
    assert all(v > 0 for v in d["kv_bytes_per_token"].values())
    for per_context in d["flops_per_token"].values():
        assert per_context["decode"] > 0 and per_context["prefill"] > 0


@fuzz(ci_examples=40)
@given(mutated_config(), st.lists(int_text(1, 4096, 131072), max_size=2))
def test_specs_model_on_mutated_configs(tmp_path_factory, data, contexts):
    path = unique_file(tmp_path_factory.getbasetemp(), data, ".json")
    args = ("specs", "model", str(path), "--json", *(f"--context={c}" for c in contexts))
    code, out, err = run_cli(*args)
    if check_outcome(args, code, out, err):
        check_model(load_json(out))


@fuzz(ci_examples=10)
@given(mutated_config(), st.sampled_from(("8", "16", "32", "64")), st.sampled_from(("decode", "prefill")))
def test_step_on_mutated_configs(tmp_path_factory, data, ep, phase):
    path = unique_file(tmp_path_factory.getbasetemp(), data, ".json")
    args = ("step", f"--model={path}", f"--ep={ep}", f"--phase={phase}", "--batch-per-die=16", "--json")
    code, out, err = run_cli(*args)
    if check_outcome(args, code, out, err):
        assert_finite(load_json(out))


_ASSIGNMENT = re.compile(r"^(\s*[A-Za-z_][\w-]*\s*=\s*)(.+?)(\s*#.*)?$")


@st.composite
def mutated_hardware(draw) -> bytes:
    lines = draw(st.sampled_from(HARDWARE_TEXTS)).splitlines()
    assignments = [i for i, line in enumerate(lines) if _ASSIGNMENT.match(line)]
    for _ in range(draw(st.integers(1, 2))):
        i = draw(st.sampled_from(assignments))
        action = draw(st.sampled_from(("value", "value", "unit", "delete", "extra")))
        m = _ASSIGNMENT.match(lines[i])
        if m is None:  # already deleted
            continue
        if action == "value":
            lines[i] = m.group(1) + draw(st.sampled_from((*EDGE_TOML, '"1e999 GB"', '"-5 TB/s"', '"7 parsecs"')))
        elif action == "unit":  # same number, another unit of the same or another kind
            lines[i] = m.group(1) + draw(st.sampled_from(('"1 GB"', '"1 us"', '"1 W"', '"1 TFLOPS"', '"1 Gb/s"')))
        elif action == "delete":
            lines[i] = ""
        else:
            lines[i] += "\nnot_a_field = 1"
    data = "\n".join(lines).encode()
    if draw(st.integers(0, 19)) == 0:
        data += b'\ndescription = "\xe9"'
    return data


@fuzz(ci_examples=30)
@given(mutated_hardware())
def test_hardware_readers_on_mutated_tomls(tmp_path_factory, data):
    path = unique_file(tmp_path_factory.getbasetemp(), data, ".toml")
    args = ("specs", "hardware", f"--hardware={path}")
    code, out, err = run_cli(*args)
    if not check_outcome(args, code, out, err):
        return
    assert not re.search(r"\b(nan|inf)\b", out, re.IGNORECASE), out
    if b"\nchip = " in b"\n" + data:  # a system file: cost a small decode step on it
        args = ("step", f"--system={path}", "--ep=8", "--batch-per-die=8", "--precision=bf16", "--json")
        code, out, err = run_cli(*args)
        if check_outcome(args, code, out, err):
            assert_finite(load_json(out))


SYSTEM_NAMES = sorted(p.stem for p in HARDWARE_DIR.glob("*.toml"))


@fuzz(ci_examples=15)
@given(
    st.sampled_from(SYSTEM_NAMES),
    st.sampled_from(SYSTEM_NAMES),
    st.sampled_from((None, "1", "18", "0", "-2")),
    st.sampled_from(("bf16", "fp8", "fp4", "int8", "fp3")),
)
def test_specs_compare(first, second, nodes, precision):
    args = ("specs", "compare", first, second, f"--precision={precision}", "--json")
    if nodes is not None:
        args += (f"--nodes={nodes}",)
    code, out, err = run_cli(*args)
    if check_outcome(args, code, out, err):
        d = load_json(out)
        assert_finite(d)
        assert all(r > 0 for r in d["ratios_first_over_second"].values())
