"""benchmarks/calibrate/: the MLA module fit recovers a block latency it was given and evaluates the twin's own
block; compare_aic_ops groups every op the twin's TEP8 step has (a renamed op cannot drop out of the comparison).

Needs the `calibrate` extra (pandas, scipy); skipped with that reason where it is not installed.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas", reason="the calibrate extra (pandas) is not installed")
pytest.importorskip("scipy", reason="the calibrate extra (scipy, via aiconfigurator-core) is not installed")

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks" / "calibrate"))
import compare_aic_ops  # noqa: E402
import fits  # noqa: E402

from cloudmatrix.perf.decode import decode_step  # noqa: E402
from cloudmatrix.perf.deployment import build_deployment  # noqa: E402
from cloudmatrix.perf.prefill import prefill_step  # noqa: E402
from cloudmatrix.specs.hardware import load_system  # noqa: E402
from cloudmatrix.specs.model import load_model  # noqa: E402

R1 = load_model("deepseek-r1")


def _module_rows(n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "gemm_type": rng.choice(["fp8_block", "bfloat16"], n),
            "kv_cache_dtype": rng.choice(["fp8", "bfloat16"], n),
            "num_heads": rng.choice([16, 32, 128], n),
            "batch_size": rng.choice([1, 8, 64, 512], n),
            "isl": 1,
            "step": rng.choice([128, 2048, 32768], n),
        }
    )


def test_the_module_fit_recovers_the_block_latency_it_was_given():
    df = _module_rows()
    s = np.random.default_rng(4).uniform(5e-6, 500e-6, len(df))
    truth = {"fp8": 40e-6, "bf16": 28e-6}
    df["t"] = df["gemm_type"].map(fits.MODULE_GEMM).map(truth) + s
    f = fits.fit_mla_module(df, s, s + 10e-6)
    for prec, value in truth.items():
        assert f.params[prec] == pytest.approx(value, rel=1e-3)
    assert f.mape < 1e-3 and f.extra["before"][0] > 0.01


def test_the_module_kernel_times_are_the_twins_block_without_its_fixed_costs():
    df = _module_rows(12)
    b200 = load_system("hgx-b200")
    s, own = fits.mla_module_kernel_times(df, load_model("deepseek-v3"), b200, "trtllm")
    assert np.all(s > 0) and np.all(own > s)
    # larger batch at the same shape: more work, never less
    one = df.iloc[[0]].copy()
    big = one.assign(batch_size=one["batch_size"] * 8)
    s1, _ = fits.mla_module_kernel_times(one, load_model("deepseek-v3"), b200, "trtllm")
    s8, _ = fits.mla_module_kernel_times(big, load_model("deepseek-v3"), b200, "trtllm")
    assert s8[0] > s1[0]


def test_the_comparison_groups_every_op_of_the_twins_step():
    b200 = load_system("hgx-b200")
    dep = build_deployment(
        R1, dies=8, ep=8, attn_tp=8, precision="fp8", kv_cache="fp8", backend="trtllm", shared_expert_dies=0,
        redundant_experts=0, system=b200,
    )  # fmt: skip
    grouped = set().union(*(names for _, names in compare_aic_ops.GROUPS.values()))
    for step in (decode_step(R1, b200, dep, 4, 1536), prefill_step(R1, b200, dep, 512, 4096)):
        names = {r.name for r in step.rows if r.group == "moe_layer"}
        assert names <= grouped, names - grouped
