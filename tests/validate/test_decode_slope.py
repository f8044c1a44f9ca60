"""benchmarks/validate_decode_slope.py on a rows CSV written here: the slopes it reports are the data's."""

import csv
import importlib.util
import math
from pathlib import Path

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "validate_decode_slope", Path(__file__).parents[2] / "benchmarks" / "validate_decode_slope.py"
)
slope_mod = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(slope_mod)

FIELDS = ["suite", "slice", "tag", "conditions", "metric", "measured", "predicted", "error"]


def _write(path, points, layout="agg 1 x [tp8 dp1 moe_tp1 ep8, batch {b}]"):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        for c, measured, predicted in points:
            w.writerow({"suite": "silicon", "slice": "h200_sxm trtllm agg", "tag": "validation", "metric": "tpot",
                        "conditions": f"deepseek-ai/DeepSeek-R1 fp8 1024/1024 c{c} " + layout.format(b=c),
                        "measured": measured, "predicted": predicted, "error": predicted / measured - 1})  # fmt: skip
    return path


def test_power_law_series_give_their_exponents(tmp_path):
    # measured TPOT grows as c^0.4, the twin's as c^0.2: one series despite the batch changing with c
    pts = [(c, 0.01 * c**0.4, 0.012 * c**0.2) for c in (4, 16, 64, 256)]
    rows = slope_mod.slopes(slope_mod.series(str(_write(tmp_path / "r.csv", pts))))
    assert len(rows) == 1
    mode, twin, measured = rows[0]
    assert mode == "agg" and measured == pytest.approx(0.4) and twin == pytest.approx(0.2)


def test_series_with_too_few_concurrencies_are_left_out(tmp_path):
    pts = [(4, 0.01, 0.01), (8, 0.012, 0.011)]
    assert slope_mod.slopes(slope_mod.series(str(_write(tmp_path / "r.csv", pts)))) == []
    assert slope_mod.slope([(1.0, 2.0), (1.0, 3.0)]) is None
    assert slope_mod.slope([(1.0, 1.0), (math.e, math.e**2)]) == pytest.approx(2.0)
