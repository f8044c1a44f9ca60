"""benchmarks/validate_expert_placement.py on per-layer dumps written here: its table is the placements' own."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "validate_expert_placement.py"
_SPEC = importlib.util.spec_from_file_location("validate_expert_placement", SCRIPT)
mod = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(mod)


def _dump(path, seed: int, layers: int = 2) -> str:
    rng = np.random.default_rng(seed)
    counts = [[0.0] * 256] + [list(rng.lognormal(0.0, 1.0, 256) * 1e4) for _ in range(layers)]
    path.write_text(json.dumps({"logical_count": counts}))
    return str(path)


def test_a_stale_placement_costs_the_paper_prefill_throughput(tmp_path):
    served, other = _dump(tmp_path / "served.json", 1), _dump(tmp_path / "other.json", 2)
    uniform = mod.prefill(None, None)
    own = mod.prefill(served, None)
    stale = mod.prefill(served, other)
    assert 1.0 <= uniform[0] < 1.05 and 1.0 <= own[0] < 1.05  # EPLB on matched statistics balances 262k tokens
    assert stale[0] > own[0] + 0.05
    assert stale[1] < own[1]  # the straggler costs throughput


def test_a_missing_file_is_a_one_line_error(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "nope.json")], capture_output=True, text=True)
    assert out.returncode == 2
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr
