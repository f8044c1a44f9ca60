"""`cloudmatrix validate` through the real entry point, on a small CSV written here (no extra needed)."""

import csv
import json
import subprocess
import sys

from silicon_rows import agg, disagg, write


def run(*args):
    return subprocess.run([sys.executable, "-m", "cloudmatrix.cli.main", "validate", *args], capture_output=True,
                          text=True, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})  # fmt: skip


def small_csv(tmp_path):
    rows = [
        agg("ok", conc=4, batch=1, isl=256, osl=32, ttft=100, tpot=10),
        agg("copy", conc=4, batch=1, isl=256, osl=32, ttft=100, tpot=10, tp=1, dp=64, moe_tp=8, ep=8,
            source="source_file=2026-04-06.csv"),  # an inflated copy of "ok" (read back to 8 GPUs) in a later dump
        disagg("noworkers", p_workers=None, d_workers=None),
        agg("llama", model="meta-llama/Llama-3.1-70B"),
    ]
    return write(tmp_path / "s.csv", rows)


def test_silicon_suite_json_counts_every_row(tmp_path):
    out = run("--suite", "silicon", "--silicon-csv", str(small_csv(tmp_path)), "--workers", "1", "--json",
              "--csv", str(tmp_path / "rows.csv"), "--report", str(tmp_path / "r.html"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)["silicon"]
    overall = data["overall"]
    assert overall["rows"] == 2  # the copy folded into "ok"; llama outside the suite
    assert overall["predicted"] == 1
    assert overall["refused"] == {"layout incomplete in the CSV (worker counts or batch not recorded)": 1}
    (ok,) = [r for r in data["rows"] if r["id"] == "ok"]
    assert ok["route"] == "simulation" and ok["predicted"]["tpot"] > 0
    assert ok["error"]["tpot"] == ok["predicted"]["tpot"] / 0.010 - 1
    lines = list(csv.DictReader((tmp_path / "rows.csv").open()))
    assert len(lines) == 4  # 2 rows x (ttft, tpot)
    assert {x["refused"] for x in lines if x["id"] == "noworkers"} == {overall_reason(overall)}
    page = (tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "<table>" in page


def overall_reason(overall):
    (reason,) = overall["refused"]
    return reason


def test_markdown_report_and_table_output(tmp_path):
    out = run("--suite", "silicon", "--silicon-csv", str(small_csv(tmp_path)), "--workers", "1",
              "--report", str(tmp_path / "r.md"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "per slice" in out.stdout and "h200_sxm trtllm agg" in out.stdout
    md = (tmp_path / "r.md").read_text()
    assert "| TTFT |" in md and "layout incomplete" in md
    assert "1 of 2 validation rows predicted, 50%; 1 of the 1 with a complete layout, 100%" in md


def test_bad_options_are_one_line_errors(tmp_path):
    for args in (["--suite", "nope"], ["--report", "x.pdf"], ["--suite", "paper", "--side-by-side"]):
        out = run(*args)
        assert out.returncode == 2 and "Traceback" not in out.stderr, args
        assert out.stderr.strip().count("\n") == 0, out.stderr
