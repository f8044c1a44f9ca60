"""`cloudmatrix step` through the real entry point: tables, JSON, one-line errors."""

import json
import subprocess
import sys


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
