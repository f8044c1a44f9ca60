"""`cloudmatrix step` through the real entry point: tables, JSON, one-line errors."""

import json
import subprocess
import sys

import pytest


def run(*args):
    return subprocess.run([sys.executable, "-m", "cloudmatrix.cli.main", "step", *args], capture_output=True, text=True)


def test_paper_decode_step_prints_the_op_table_and_totals():
    out = run(
        "--system",
        "cloudmatrix384",
        "--model",
        "deepseek-r1",
        "--phase",
        "decode",
        "--batch-per-die",
        "48",
        "--kv-len",
        "4096",
        "--ep",
        "320",
        "--mtp",
        "1",
        "--microbatches",
        "2",
        "--precision",
        "int8",
    )
    assert out.returncode == 0, out.stderr
    for text in ("attention_core", "dispatch", "combine", "TPOT", "tokens/s per chip", "roofline limit"):
        assert text in out.stdout


def test_json_and_hgx_nodes():
    out = run(
        "--system", "hgx-h800", "--nodes", "18", "--ep", "144", "--precision", "fp8", "--batch-per-die", "32", "--json"
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["system"] == "hgx-h800" and data["tokens_per_s_per_chip"] > 0


def test_errors_are_one_line_with_exit_2():
    for args, needle in (
        (("--phase", "train"), "decode' or 'prefill"),
        (("--precision", "fp8"), "no native fp8"),
        (("--system", "nope"), "unknown system"),
        (("--batch-per-die", "500"), "does not fit"),
    ):
        out = run(*args)
        assert out.returncode == 2, args
        assert needle in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-per-die", "nan"], "--batch-per-die must be a finite number"),
        (["--batch-per-die", "0"], "--batch-per-die must be greater than 0"),
        (["--phase", "prefill", "--tokens-per-die", "inf"], "--tokens-per-die must be a finite number"),
        (["--phase", "prefill", "--prompt-len", "-1"], "--prompt-len must be greater than 0"),
        (["--kv-len", "nan", "--json"], "--kv-len must be a finite number"),
        (["--imbalance", "inf"], "--imbalance must be a finite number"),
        (["--imbalance", "0.5"], "--imbalance must be at least 1"),
        (["--imbalance", "1e300"], "--imbalance must be at most 320"),
        (["--batch-per-die", "1e300"], "--batch-per-die must be at most"),
        (["--kv-len", "1e300"], "--kv-len must be at most"),
        (["--attn-tp", "0"], "--attn-tp must be at least 1"),
        (["--attn-tp", "-1"], "--attn-tp must be at least 1"),
        (["--dies", "0"], "--dies must be at least 1"),
        (["--ep", "0"], "--ep must be at least 1"),
        (["--mtp-acceptance", "nan"], "--mtp-acceptance must be a finite number"),
        (["--mtp-acceptance", "1.5"], "--mtp-acceptance must be at most 1"),
        (["--zipf-s", "inf", "--popularity", "zipf"], "--zipf-s must be a finite number"),
    ],
)
def test_bad_numbers_are_one_line_errors(cli, args, message):
    code, out, err = cli("step", *args)
    assert code == 2, (args, out)
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert out == ""  # nothing printed as if it had worked


def test_dies_is_used_as_given_not_replaced_by_the_ep_degree(cli):
    code, out, _ = cli("step", "--ep", "32", "--dies", "64", "--batch-per-die", "16", "--json")
    assert code == 0
    code2, out2, _ = cli("step", "--ep", "32", "--batch-per-die", "16", "--json")
    assert code2 == 0
    # 64 dies with EP32 keeps two expert replicas; 32 dies does not: the step costs differ
    assert json.loads(out) != json.loads(out2)


def test_backend_picks_the_serving_stack_and_an_unknown_one_is_a_one_line_error():
    prefill = ("--system", "hgx-b200", "--ep", "8", "--dies", "8", "--attn-tp", "8", "--phase", "prefill",
               "--tokens-per-die", "128", "--prompt-len", "128", "--mtp", "0", "--microbatches", "1",
               "--precision", "fp8", "--json")  # fmt: skip
    eager = json.loads(run(*prefill, "--backend", "sglang").stdout)
    assert eager["host_time_s"] > 0.005  # an eager prefill issues ~30 ops x 61 layers from Python
    assert eager["step_time_s"] >= eager["host_time_s"]  # a step never beats the host that issues it
    out = run("--system", "hgx-b200", "--ep", "8", "--dies", "8", "--backend", "trt")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "unknown backend 'trt'" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def _sglang_dump(path, seed: int, layers: int = 3) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    counts = [[0.0] * 256] + [list(rng.lognormal(0.0, 1.0, 256) * 1e4) for _ in range(layers)]
    path.write_text(json.dumps({"logical_count": counts}))


def test_placement_from_other_statistics_raises_the_imbalance(tmp_path):
    served, other = tmp_path / "served.json", tmp_path / "other.json"
    _sglang_dump(served, 1)
    _sglang_dump(other, 2)
    base = ("--phase", "prefill", "--ep", "32", "--dies", "32", "--tokens-per-die", "8192", "--prompt-len", "4096")
    base += ("--json", "--popularity", str(served))
    own = run(*base)
    stale = run(*base, "--placement-from", str(other))
    assert own.returncode == 0 and stale.returncode == 0, own.stderr + stale.stderr
    imb_own = json.loads(own.stdout)["expert_load"]["imbalance"]
    imb_stale = json.loads(stale.stdout)["expert_load"]["imbalance"]
    assert imb_own < 1.05 < imb_stale
    assert json.loads(stale.stdout)["tokens_per_s_per_chip"] < json.loads(own.stdout)["tokens_per_s_per_chip"]
    both = run(*base, "--placement-from", str(other), "--imbalance", "1.2")
    assert both.returncode == 2 and "leave out --imbalance" in both.stderr and "Traceback" not in both.stderr
