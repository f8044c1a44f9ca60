"""The gather-reduce vector kernel class (`Efficiency.vector_reduce`, the MoE combine sum): measured on the A3 die
for the 910C (pto-isa's MegaMoE unpermute, benchmarks/calibrate/ascend_910c.py), `vector` on every other chip."""

import sys
import tomllib
from pathlib import Path

import pytest

from cloudmatrix.perf.context import DieContext
from cloudmatrix.perf.moe import moe_ops
from cloudmatrix.sim.scenario import load_scenario
from cloudmatrix.specs.hardware import Efficiency, load_chip, load_system

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks" / "calibrate"))
import ascend_910c  # noqa: E402

CM = load_system("cloudmatrix384")
HARDWARE = Path(__file__).parents[2] / "src" / "cloudmatrix" / "specs" / "catalog" / "hardware"


def test_vector_reduce_defaults_to_vector():
    eff = Efficiency(gemm=0.8, attention_compute=0.5, attention_memory=0.7, memory=0.9, vector=0.6)
    assert eff.vector_reduce == 0.6
    assert Efficiency(gemm=0.8, attention_compute=0.5, attention_memory=0.7, memory=0.9).vector_reduce == 0.9


def test_only_the_910c_has_its_own_gather_reduce_fraction():
    """Every catalog chip but the 910C keeps its combine sum at `vector` (its prefill figures stay put)."""
    own = []
    for path in sorted(HARDWARE.glob("*.toml")):
        if "die" not in tomllib.loads(path.read_text()):
            continue  # a system file
        chip = load_chip(path)
        effs = [chip.efficiency, *chip.efficiency.backend.values()]
        if any(e.vector_reduce != e.vector for e in effs):
            own.append(chip.name)
    assert own == ["ascend-910c"]


def test_910c_toml_holds_the_fit():
    """The TOML value is the calibration script's (a regenerated section that dropped the line would fail here)."""
    fit = ascend_910c.fit_vector_reduce()
    assert CM.chip.efficiency.vector_reduce == pytest.approx(fit["vector_reduce"], abs=5e-4)
    # the measured unpermute is slower per byte than the element-wise kernels' `vector`
    assert fit["vector_reduce"] < CM.chip.efficiency.vector


def test_unpermute_window_reproduces_the_measured_rate():
    """264 MB in 416 us on the A3: the bytes are the twin's combine_sum count (top-8 rows read + the token written)."""
    mm = ascend_910c.MEGAMOE
    elements = mm["tokens"] * mm["hidden"]
    assert ascend_910c.unpermute_bytes() == pytest.approx(elements * (mm["top_k"] + 1) * 2)
    a, b, _ = mm["unpermute"]
    fit = ascend_910c.fit_vector_reduce()
    assert fit["rate"] * (b - a) * 1e-6 == pytest.approx(ascend_910c.unpermute_bytes())


def _combine_sum(system, scenario="paper-prefill-perfect"):
    sc = load_scenario(scenario)
    _, model = sc.check()
    dep = sc.deployment(sc.prefill, model).with_(microbatches=1)
    ops = moe_ops(DieContext(model, system, dep), 8192.0, "prefill")[0]
    return next(op for op in ops if op.name == "combine_sum")


def test_910c_combine_sum_runs_at_vector_reduce():
    op = _combine_sum(CM)
    eff, bw = CM.chip.efficiency, CM.chip.die.hbm_bandwidth
    assert op.memory_time == pytest.approx(op.bytes / (bw * eff.vector_reduce), rel=1e-12)
    assert op.time == pytest.approx(eff.vector_latency + op.bytes / (bw * eff.vector_reduce), rel=1e-12)


def test_combine_sum_reads_only_its_own_fraction():
    """Changing vector_reduce moves the combine sum and no other MoE op; at vector_reduce = vector the op is the
    plain vector kernel, field for field."""
    eff = CM.chip.efficiency
    same = ascend_910c.chip_with({"vector_reduce": eff.vector})
    half = ascend_910c.chip_with({"vector_reduce": eff.vector / 2})
    sc = load_scenario("paper-prefill-perfect")
    _, model = sc.check()
    dep = sc.deployment(sc.prefill, model).with_(microbatches=1)
    a = moe_ops(DieContext(model, same, dep), 8192.0, "prefill")[0]
    b = moe_ops(DieContext(model, half, dep), 8192.0, "prefill")[0]
    for x, y in zip(a, b, strict=True):
        if x.name == "combine_sum":
            assert y.memory_time == pytest.approx(2 * x.memory_time, rel=1e-12)
            plain = DieContext(model, same, dep).vector("combine_sum", "moe", x.bytes / 20.0, 20.0)
            assert x == plain
        else:
            assert x == y, x.name
