"""benchmarks/calibrate/: its loader reads aiconfigurator's layout, its vectorised models are the twin's kernel
functions, a fit recovers parameters it was given, and its TOML rewrite keeps the hand-written part.

Needs the `calibrate` extra (pandas, pyarrow, scipy); skipped with that reason where it is not installed.
"""

import sys
from pathlib import Path

import pytest

pd = pytest.importorskip("pandas", reason="the calibrate extra (pandas) is not installed")
pytest.importorskip("pyarrow", reason="the calibrate extra (pyarrow) is not installed")
pytest.importorskip("scipy", reason="the calibrate extra (scipy, via aiconfigurator-core) is not installed")

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks" / "calibrate"))
import aic_data  # noqa: E402
import fits  # noqa: E402
import toml_section  # noqa: E402

from cloudmatrix.perf import kernels  # noqa: E402
from cloudmatrix.specs.hardware import ChipSpec  # noqa: E402

TRUE = {
    "memory": 0.8,
    "bf16.peak": 0.75,
    "bf16.half_rows": 64.0,
    "bf16.half_n": 128.0,
    "bf16.half_k": 256.0,
    "bf16.latency": 4e-6,
}
PEAKS = {"bf16": 1e15}
BW = 4e12


def toy_chip(p: dict) -> ChipSpec:
    return ChipSpec.model_validate(
        {
            "name": "toy",
            "vendor": "test",
            "dies": 1,
            "die": {"peak": {"bf16": PEAKS["bf16"]}, "hbm_capacity": 1e11, "hbm_bandwidth": BW},
            "efficiency": {
                "gemm": p["bf16.peak"],
                "gemm_half_rows": p["bf16.half_rows"],
                "gemm_half_n": p["bf16.half_n"],
                "gemm_half_k": p["bf16.half_k"],
                "kernel_latency": p["bf16.latency"],
                "attention_compute": 0.5,
                "attention_memory": 0.8,
                "memory": p["memory"],
            },
        }
    )


def gemm_rows() -> "pd.DataFrame":
    sizes = [1, 8, 64, 256, 1024, 4096]
    rows = [(m, n, k) for m in sizes for n in (256, 2048, 8192) for k in (128, 1024, 7168)]
    df = pd.DataFrame(rows, columns=["m", "n", "k"])
    df["gemm_dtype"] = "bfloat16"
    chip = toy_chip(TRUE)
    df["latency"] = [kernels.gemm(m, n, k, "bf16", chip).time * 1e3 for m, n, k in rows]  # ms, as aic stores it
    return df


def test_loader_reads_the_aiconfigurator_layout_and_converts_ms(tmp_path):
    op, backend, version, name = aic_data.SOURCES["gemm"]
    d = tmp_path / "toy_sxm" / op / backend / version
    d.mkdir(parents=True)
    gemm_rows().to_parquet(d / name)
    t = aic_data.load("toy_sxm", "gemm", root=tmp_path)
    assert t.rows == 54 and t.path.endswith(f"toy_sxm/gemm/{backend}/{version}/{name}")
    assert t.frame["t"].iloc[0] == pytest.approx(t.frame["latency"].iloc[0] * 1e-3)
    assert aic_data.load("absent", "gemm", root=tmp_path) is None


def test_vectorised_gemm_model_is_the_twin_kernel():
    df = gemm_rows()
    df["prec"] = "bf16"
    pred = fits.gemm_model(df, PEAKS, BW, TRUE)
    assert list(pred * 1e3) == pytest.approx(list(df["latency"]), rel=1e-9)


def test_fit_recovers_the_parameters_of_synthetic_rows():
    df = gemm_rows()
    df["prec"] = "bf16"
    df["t"] = df["latency"] * 1e-3
    f = fits.fit_gemm(df, PEAKS, BW)
    assert f.mape < 0.01
    for key in ("bf16.peak", "memory", "bf16.latency"):
        assert f.params[key] == pytest.approx(TRUE[key], rel=0.05), key


def test_mla_models_are_the_twin_kernels():
    chip = toy_chip(TRUE)
    gen = pd.DataFrame(
        {"batch_size": [1, 64], "isl": [1, 1], "step": [1023, 4095], "num_heads": [128, 16],
         "kv_cache_dtype": ["bfloat16", "fp8"]}
    )  # fmt: skip
    e = chip.efficiency
    pred = fits.mla_gen_model(gen, 1e15, BW, e.attention_compute, e.attention_memory, e.attention_latency)
    for row, p in zip(gen.itertuples(), pred, strict=True):
        kv = "fp8" if row.kv_cache_dtype == "fp8" else "bf16"
        op = kernels.mla_decode(row.batch_size, row.batch_size, row.step + row.isl, row.num_heads, 512, 64, "bf16",
                                kv, chip)  # fmt: skip
        assert p == pytest.approx(op.time)


def test_generated_section_is_rewritten_and_the_rest_kept():
    text = 'name = "x"\n[die]\nhbm_capacity = "1 GB"  # source\n\n[efficiency]\ngemm = 0.5  # placeholder\n'
    once = toml_section.replace_efficiency(text, "[efficiency]\n# fit\ngemm = 0.7")
    twice = toml_section.replace_efficiency(once, "[efficiency]\n# fit\ngemm = 0.8")
    assert 'hbm_capacity = "1 GB"  # source' in twice and "gemm = 0.8" in twice
    assert "0.5" not in twice and "0.7" not in twice and twice.count(toml_section.BEGIN) == 1
    sys_text = '[scale_up]\nname = "a"\nlatency = "2 us"  # s\n\n[scale_out]\nname = "b"\n'
    out = toml_section.replace_in_table(sys_text, "scale_up", "# fit\ncollective_efficiency = 0.5")
    out = toml_section.replace_in_table(out, "scale_up", "# fit\ncollective_efficiency = 0.6")
    assert out.index("collective_efficiency = 0.6") < out.index("[scale_out]")
    assert "0.5" not in out and out.count(toml_section.END) == 1


def test_vectorised_moe_model_is_the_twin_kernel_with_its_token_pass():
    curve = {"peak": 0.5, "half_rows": 32.0, "half_n": 256.0, "half_k": 512.0, "latency": 10e-6, "token_bytes": 9.0}
    chip = ChipSpec.model_validate(
        toy_chip(TRUE).model_dump() | {"efficiency": toy_chip(TRUE).efficiency.model_dump() | {"grouped_gemm": curve}}
    )
    d = pd.DataFrame(
        {"rows": [16.0, 4096.0, 65536.0], "experts": [16.0, 32.0, 128.0], "hidden": [7168.0, 7168.0, 4096.0],
         "inter": [2048.0, 2048.0, 1024.0], "tokens": [2.0, 16384.0, 16384.0], "prec": "bf16"}
    )  # fmt: skip
    pred = fits.moe_model(d, PEAKS, BW, {"bf16": curve}, chip.efficiency.memory)
    for r, p in zip(d.itertuples(), pred, strict=True):
        shapes = ((r.hidden, 2 * r.inter), (r.inter, r.hidden))
        op = kernels.grouped_gemm(r.rows, r.experts, shapes, "bf16", chip, token_elements=r.tokens * r.hidden)
        assert p == pytest.approx(op.time, rel=1e-9)
    # the token pass is in both: without it the twin is faster by exactly its HBM time
    bare = kernels.grouped_gemm(4096.0, 32.0, ((7168.0, 4096.0), (2048.0, 7168.0)), "bf16", chip).time
    assert pred[1] - bare == pytest.approx(16384 * 7168 * 9.0 / BW, rel=1e-9)


def test_vectorised_prefill_ep_model_is_the_twin_comm_kernel():
    from cloudmatrix.perf import comm
    from cloudmatrix.specs.hardware import load_system

    s = load_system("gb200-nvl72")
    up = s.spec.scale_up
    if up.prefill_latency is None:
        pytest.fail("gb200-nvl72 has no fitted prefill EP kernels (benchmarks/calibrate/run.py --write)")
    d = pd.DataFrame({"ep": [2, 4, 8, 32], "tokens": [1.0, 1024.0, 8192.0, 4096.0], "topk": 8.0,
                      "dispatch_bytes": 7392.0, "combine_bytes": 14336.0})  # fmt: skip
    bw = comm.die_bandwidth(s, up)
    for op, eff, per_copy in (
        ("dispatch", up.prefill_dispatch_efficiency, up.prefill_dispatch_per_copy),
        ("combine", up.prefill_combine_efficiency, up.prefill_combine_per_copy),
    ):
        pred = fits.ep_prefill_model(d, op, bw, up.prefill_latency, eff, per_copy)
        for r, p in zip(d.itertuples(), pred, strict=True):
            t, _ = comm.ep_all_to_all(s, r.ep, r.tokens, 8, getattr(r, f"{op}_bytes"), op, prefill=True)
            assert p == pytest.approx(t, rel=1e-9)
