"""benchmarks/validate_client_warmup.py: rows fall on the side of the client's warm-up date their measurement has."""

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "validate_client_warmup.py"
_SPEC = importlib.util.spec_from_file_location("validate_client_warmup", SCRIPT)
mod = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(mod)

COLUMNS = ("suite", "id", "slice", "tag", "metric", "measured", "predicted", "error")


def _rows(path: Path, rows) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow(dict(zip(COLUMNS, r, strict=True)))
    return path


def test_rows_split_at_the_warm_up_date_and_refused_rows_are_left_out(tmp_path):
    p = _rows(tmp_path / "r.csv", [
        ("silicon", "a_c4_x", "b200 agg", "validation", "ttft", "0.2", "0.1", "-0.5"),
        ("silicon", "b_c4_x", "b200 agg", "validation", "ttft", "0.2", "0.15", "-0.25"),
        ("silicon", "c_c4_x", "b200 agg", "validation", "ttft", "0.2", "", ""),  # refused
        ("silicon", "d_c4_x", "b200 agg", "calibration", "ttft", "0.2", "0.1", "-0.5"),  # not validation
        ("paper", "e", "cm384", "validation", "figure", "1", "1", "0"),
    ])  # fmt: skip
    dates = {"a_c4_x": "2026-01-14", "b_c4_x": mod.WARMUP_SINCE, "c_c4_x": "2026-02-01"}
    groups = mod.split(p, dates)
    assert groups == {
        ("b200 agg", "before", "ttft"): [(-0.5, 0.2, 0.1)],
        ("b200 agg", "after", "ttft"): [(-0.25, 0.2, 0.15)],  # measured on the day the warm-ups landed
    }


def test_a_missing_file_is_a_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "nope.csv")], capture_output=True, text=True)
    assert out.returncode == 2
    assert "is not a file" in out.stderr and "Traceback" not in out.stderr
