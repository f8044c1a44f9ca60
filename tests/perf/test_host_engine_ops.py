"""The engine's backend profile reproduces the op counts of the engine's own code: a step the profile was not
counted at (two sequences; it was counted at one and eight) is re-counted here, layer by layer."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import host_engine_ops  # noqa: E402

from cloudmatrix.specs.backend import load_backend  # noqa: E402


@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_engine_profile_reproduces_the_counted_ops_per_layer(phase):
    counted = host_engine_ops.count_steps(2, steps=2)
    ops = load_backend("engine").ops[phase]
    layers = counted["layers"]
    calls = counted[phase]["moe_calls"]
    assert calls, "no MoE layer ran"
    for n_ops, hit in calls:  # each MoE layer at the experts its own tokens hit
        assert ops.per_layer("moe_layer", 2, hit) == pytest.approx(n_ops, abs=4)
    dense = counted[phase]["ops"]["dense_layer"] / (layers["all"] - layers["moe"])
    assert ops.per_layer("dense_layer", 2, 0) == pytest.approx(dense, abs=2)
    assert ops.per_layer("head", 2, 0) == pytest.approx(counted[phase]["ops"]["head"], abs=2)
