"""benchmarks/host_microbench.py: its GEMM fit inverts the twin's curve, and the TOML pair it writes from fixed
measurements loads through the hardware loader with those figures."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import host_microbench  # noqa: E402

from cloudmatrix.specs.hardware import load_system  # noqa: E402


def _sweep(peak: float, eff: float, half_rows: float, latency: float, k: int = 256, n: int = 512) -> list[dict]:
    # times the twin's own curve gives: t = latency + 2mkn / (peak * eff * m / (m + half_rows))
    return [{"m": m, "k": k, "n": n, "s": latency + 2 * m * k * n / (peak * eff * m / (m + half_rows))}
            for m in (1, 4, 16, 64, 256)]  # fmt: skip


FAKE = {
    "date": "2026-01-01 00:00 UTC",
    "cpu": "Fake CPU 9000",
    "cores": 4,
    "mem_bytes": 32e9,
    "torch": "0.0",
    "model": "default_model",
    "gemm": {
        "fp32": {"peak_flops": 100e9, "peak_shape": 1024, "sweep": _sweep(100e9, 0.7, 0.0, 3e-6)},
        "bf16": {"peak_flops": 400e9, "peak_shape": 1024, "sweep": _sweep(400e9, 0.8, 100.0, 3e-6)},
    },
    "launch": {"gemm_s": 3e-6, "vector_s": 2e-6},
    "copy_bandwidth": 6e9,
    "a2a": {"latency_s": 250e-6, "bandwidth": 1.5e9, "rows": [{"bytes_to_peer": 8, "s": 250e-6}]},
    "load_avg": 1.0,
}


def test_fit_recovers_the_curve_it_was_given():
    f = host_microbench.fit_gemm(400e9, FAKE["gemm"]["bf16"]["sweep"], 3e-6)
    assert f["peak"] == pytest.approx(0.8, rel=1e-6)
    assert f["half_rows"] == pytest.approx(100.0, rel=1e-6)


def test_written_pair_loads_with_the_measured_figures(tmp_path):
    system = load_system(host_microbench.write_pair(FAKE, tmp_path))
    chip = system.chip
    assert system.chips == 4 and system.nodes == 1
    assert chip.die.peak == {"fp32": pytest.approx(100e9), "bf16": pytest.approx(400e9)}
    assert chip.die.hbm_bandwidth == pytest.approx(6e9)
    assert chip.die.hbm_capacity == pytest.approx(8e9)
    assert chip.efficiency.kernel_latency == pytest.approx(3e-6)
    assert chip.efficiency.vector_latency == pytest.approx(2e-6)
    assert chip.efficiency.gemm_by_precision["fp32"].peak == pytest.approx(0.7, abs=1e-3)
    assert chip.efficiency.gemm_half_rows == pytest.approx(100.0, abs=0.1)
    assert system.spec.scale_up.latency == pytest.approx(250e-6)
    assert system.spec.scale_up.bandwidth_per_chip == pytest.approx(1.5e9)
    assert "Fake CPU 9000" in (tmp_path / "host-cpu.toml").read_text()
