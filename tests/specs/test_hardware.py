"""Hardware catalog: shipped files load, pinned data-sheet figures, and bad files fail with one clear line."""

import re
from pathlib import Path

import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.specs.hardware import catalog_names, load_chip, load_system

CATALOG = Path(__file__).parents[2] / "src" / "cloudmatrix" / "specs" / "catalog" / "hardware"
NVIDIA_CHIPS = ["h100-sxm", "h800-sxm", "h200-sxm", "b200", "b300", "gb200", "gb300"]
NVIDIA_SYSTEMS = ["gb200-nvl72", "gb300-nvl72", "hgx-h100", "hgx-h800", "hgx-h200", "hgx-b200", "hgx-b300"]


def test_catalog_lists_the_shipped_files():
    assert set(NVIDIA_CHIPS + ["ascend-910c"]) <= set(catalog_names("chip"))
    assert set(NVIDIA_SYSTEMS + ["cloudmatrix384"]) <= set(catalog_names("system"))
    assert not set(catalog_names("chip")) & set(catalog_names("system"))


@pytest.mark.parametrize("name", NVIDIA_SYSTEMS + ["cloudmatrix384"])
def test_every_system_loads_with_its_chip(name):
    s = load_system(name)
    assert s.chips == s.nodes * s.spec.chips_per_node
    assert s.power > 0 and s.price_usd > 0
    assert s.chip.peak("bf16") > 0 and s.chip.hbm_capacity > 0
    assert s.spec.scale_up.bandwidth_per_chip > s.spec.scale_out.bandwidth_per_chip


@pytest.mark.parametrize("path", sorted(CATALOG.glob("*.toml")), ids=lambda p: p.stem)
def test_every_figure_has_a_source_comment(path):
    """Each quantity is commented on its line or in its paragraph (a run of non-blank lines)."""
    skip = {"name", "vendor", "description", "chip", "fabric"}
    for para in path.read_text().split("\n\n"):
        lines = para.splitlines()
        has_comment = any("#" in line for line in lines)
        for line in lines:
            m = re.match(r"^(\w+)\s*=\s*(.+)$", line)
            if m and m.group(1) not in skip and re.search(r"\d", m.group(2)):
                assert has_comment, f"{path.name}: {line!r} has no source comment"


def test_pinned_datasheet_figures():
    h100, h800, h200 = load_chip("h100-sxm"), load_chip("h800-sxm"), load_chip("h200-sxm")
    for c in (h100, h800, h200):
        assert c.peak("bf16") == 989e12 and c.peak("fp8") == 1979e12  # dense = half the sparse data-sheet figure
        assert c.tdp == 700
    assert h100.hbm_capacity == 80e9 and h100.hbm_bandwidth == 3.35e12
    assert h200.hbm_capacity == 141e9 and h200.hbm_bandwidth == 4.8e12
    b200, gb200, gb300 = load_chip("b200"), load_chip("gb200"), load_chip("gb300")
    assert (b200.peak("bf16"), b200.peak("fp8"), b200.peak("fp4")) == (2.25e15, 4.5e15, 9e15)
    assert (gb200.peak("bf16"), gb200.peak("fp8"), gb200.peak("fp4")) == (2.5e15, 5e15, 10e15)
    assert gb300.peak("fp4") == 15e15 and gb300.hbm_capacity == 288e9
    # Blackwell keeps full-rate INT8; Blackwell Ultra cut it to a small fraction
    assert b200.peak("int8") == b200.peak("fp8")
    assert gb300.peak("int8") < 0.05 * gb300.peak("fp8")
    b300 = load_chip("b300")  # Blackwell Ultra data sheet, HGX column
    assert (b300.peak("bf16"), b300.peak("fp8"), b300.peak("fp4")) == (2.25e15, 4.5e15, 14e15)
    assert b300.hbm_capacity == 288e9 and b300.tdp == 1100 and b300.peak("int8") == 153.5e12
    assert load_system("hgx-b300").spec.scale_out.bandwidth_per_chip == pytest.approx(100e9)  # 800 Gb/s CX8
    with pytest.raises(CloudMatrixError, match="no native fp4"):
        h100.peak("fp4")


def test_fabrics():
    h800 = load_system("hgx-h800")
    assert h800.spec.scale_up.bandwidth_per_chip == 200e9  # 400 GB/s bidirectional
    assert h800.scale_up_domain_chips == 8
    out = h800.spec.scale_out
    assert out.bandwidth_per_chip == pytest.approx(50e9)  # 400 Gb/s
    assert (out.dispatch_efficiency, out.combine_efficiency) == (0.844, 0.831)
    assert out.sync_per_log2_rank == pytest.approx(1.37e-6) and out.latency == pytest.approx(3e-6)
    assert load_system("hgx-h100").spec.scale_up.bandwidth_per_chip == 450e9
    for name in ("gb200-nvl72", "gb300-nvl72"):
        s = load_system(name)
        assert (s.chips, s.nodes, s.scale_up_domain_chips) == (72, 18, 72)
        assert s.spec.scale_up.bandwidth_per_chip == 900e9
        assert s.spec.cpu_pool is not None and s.spec.cpu_pool.dram_per_node == 960e9
    assert load_system("gb300-nvl72").power > load_system("gb200-nvl72").power


def test_hgx_clusters_scale_by_node_and_racks_do_not():
    s = load_system("hgx-h800")
    big = s.with_nodes(2 * s.nodes)
    assert big.chips == 2 * s.chips and big.power == pytest.approx(2 * s.power)
    assert big.price_usd == pytest.approx(2 * s.price_usd)
    with pytest.raises(CloudMatrixError, match="fixed"):
        load_system("gb200-nvl72").with_nodes(2)
    with pytest.raises(CloudMatrixError, match="positive"):
        s.with_nodes(0)


# ------------------------------------------------------------------ bad files

CHIP = """name = "my-chip"
vendor = "Me"
dies = 1
[die]
hbm_capacity = "96 GB"
hbm_bandwidth = "4 TB/s"
[die.peak]
bf16 = "1000 TFLOPS"
[efficiency]
gemm = 0.8
attention_compute = 0.6
attention_memory = 0.8
memory = 0.8
"""

SYSTEM = """name = "my-system"
chip = "my-chip.toml"
nodes = 2
chips_per_node = 8
power_per_node = "10 kW"
price_per_node_usd = 2e5
[scale_up]
name = "link"
bandwidth_per_chip = "400 GB/s"
domain_chips = 8
latency = "2 us"
[scale_out]
name = "rdma"
bandwidth_per_chip = "400 Gb/s"
latency = "3 us"
"""


def write(tmp_path, chip=CHIP, system=SYSTEM):
    (tmp_path / "my-chip.toml").write_text(chip)
    (tmp_path / "my-system.toml").write_text(system)
    return tmp_path / "my-system.toml"


def test_user_system_with_relative_chip_loads(tmp_path):
    s = load_system(write(tmp_path))
    assert s.chip.name == "my-chip" and s.chips == 16 and s.power == 20e3


@pytest.mark.parametrize(
    "chip, system, needle",
    [
        (CHIP.replace('hbm_capacity = "96 GB"\n', ""), SYSTEM, "my-chip.toml: die.hbm_capacity: missing"),
        (CHIP.replace('"96 GB"', '"-96 GB"'), SYSTEM, "die.hbm_capacity: Input should be greater than 0"),
        (CHIP.replace('"4 TB/s"', '"4 TQ/s"'), SYSTEM, "die.hbm_bandwidth: unknown unit 'TQ/s'"),
        (CHIP.replace("gemm = 0.8", "gemm = 1.5"), SYSTEM, "efficiency.gemm"),
        (CHIP.replace("bf16 =", "bf17 ="), SYSTEM, "unknown precision"),
        (CHIP, SYSTEM.replace('"my-chip.toml"', '"no-such-chip"'), "chip = 'no-such-chip' cannot be loaded"),
        (CHIP, SYSTEM.replace("nodes = 2", "nodes = -2"), "my-system.toml: nodes: Input should be greater than 0"),
        (CHIP, SYSTEM.replace("domain_chips = 8\n", ""), "needs domain_chips"),
        (CHIP, SYSTEM.replace("price_per_node_usd = 2e5", "price_per_node_usd = 2e5\nprice_usd = 1e6"), "exactly one"),
        (CHIP, SYSTEM.replace("[scale_up]", "[scale_upp]"), "scale_upp: unknown field"),
        (CHIP, SYSTEM.replace("nodes = 2", "nodes = [2"), "not valid TOML"),
        (CHIP.replace("[die]", "[die"), SYSTEM, "my-chip.toml: not valid TOML"),
        (CHIP + "[efficiency.gemm_by_precision.fp9]\npeak = 0.5\n", SYSTEM, "unknown precision(s) ['fp9']"),
        (CHIP + "[efficiency.grouped_gemm]\npeak = 1.2\n", SYSTEM, "efficiency.grouped_gemm.peak"),
        (CHIP + 'kernel_latency = "-3 us"\n', SYSTEM, "efficiency.kernel_latency"),
    ],
    ids=[
        "missing",
        "negative",
        "unit",
        "fraction",
        "precision",
        "chipref",
        "neg-nodes",
        "domain",
        "price-twice",
        "typo",
        "system-toml",
        "chip-toml",
        "gemm-precision",
        "grouped-fraction",
        "negative-latency",
    ],
)
def test_bad_files_give_one_line_naming_file_and_field(tmp_path, chip, system, needle):
    path = write(tmp_path, chip, system)
    with pytest.raises(CloudMatrixError) as e:
        load_system(path)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_unknown_names_and_wrong_kind(tmp_path):
    with pytest.raises(CloudMatrixError, match="unknown system 'nvl-9000'; known: .*gb200-nvl72"):
        load_system("nvl-9000")
    with pytest.raises(CloudMatrixError, match="unknown chip 'x9'"):
        load_chip("x9")
    with pytest.raises(CloudMatrixError, match="does not exist"):
        load_system(tmp_path / "absent.toml")
    with pytest.raises(CloudMatrixError, match="chip file, not a system"):
        load_system(CATALOG / "h800-sxm.toml")
    with pytest.raises(CloudMatrixError, match="system file, not a chip"):
        load_chip(CATALOG / "hgx-h800.toml")


# ---------------------------------------------------------------- per-backend kernel overrides


def _chip_data(name: str) -> dict:
    import tomllib

    data = tomllib.loads((CATALOG / f"{name}.toml").read_text())
    data["efficiency"].pop("backend", None)
    return data


def _without(d: dict, *keys: str) -> dict:
    return {k: v for k, v in d.items() if k not in keys}


def test_backend_override_changes_exactly_the_table_it_names():
    from cloudmatrix.specs.hardware import ChipSpec

    data = _chip_data("h200-sxm")
    data["efficiency"]["backend"] = {"sglang": {"grouped_gemm_by_precision": {"fp8": {"peak": 0.3}}}}
    eff = ChipSpec.model_validate(data).efficiency
    over = eff.backend["sglang"]
    base_fp8, over_fp8 = eff.grouped_gemm_by_precision["fp8"], over.grouped_gemm_by_precision["fp8"]
    assert over_fp8.peak == 0.3 and base_fp8.peak != 0.3
    # the other keys of the overridden curve, the other precisions and every other table are the default's
    assert _without(over_fp8.model_dump(), "peak") == _without(base_fp8.model_dump(), "peak")
    assert over.grouped_gemm_by_precision["bf16"] == eff.grouped_gemm_by_precision["bf16"]
    assert _without(over.model_dump(), "grouped_gemm_by_precision", "backend") == _without(
        eff.model_dump(), "grouped_gemm_by_precision", "backend"
    )


def test_catalog_backend_curves_override_only_moe_narrow_gemms_and_the_custom_all_reduce():
    """The generated sglang/vllm sections replace the MoE op's curves, the fp8/fp4 GEMM curves, the scale-up
    plane's custom all-reduce kernel and the stack's own mechanisms (a second stream for the shared experts,
    norm fusion, plain-TP prefill, whole-MLA-block fixed costs); every other kernel table (bf16 GEMM, per-kernel
    MLA efficiency, vector) is the default fit."""
    for name in ("gb200-nvl72", "hgx-h200"):
        system = load_system(name)
        for backend in ("sglang", "vllm"):
            s = system.for_backend(backend)
            assert s is not system and s is system.for_backend(backend)  # resolved once, kept
            stack = ("shared_experts_aux_stream", "allreduce_norm_fusion", "prefill_attention_sp",
                     "mla_decode_block_latency", "mla_prefill_block_latency", "grouped_gemm_low_latency_by_precision")
            moe = ("grouped_gemm", "grouped_gemm_by_precision", "gemm_by_precision", "backend", *stack)
            base, over = system.chip.efficiency.model_dump(), s.chip.efficiency.model_dump()
            assert _without(over, *moe) == _without(base, *moe)
            assert over["grouped_gemm_by_precision"] != base["grouped_gemm_by_precision"]
            assert over["gemm_by_precision"] != base["gemm_by_precision"]
            assert set(over["gemm_by_precision"]) == set(base["gemm_by_precision"])
            ar = [k for k in s.spec.scale_up.model_dump() if k.startswith("custom_")]
            up0, up1 = system.spec.scale_up.model_dump(), s.spec.scale_up.model_dump()
            assert _without(up1, *ar, "backend") == _without(up0, *ar, "backend")
            assert [up1[k] for k in ar] != [up0[k] for k in ar]
            assert s.spec.scale_out == system.spec.scale_out
    cm = load_system("cloudmatrix384")
    assert cm.for_backend("sglang") is cm  # no per-backend tables: the default fit


def test_unknown_backend_is_one_line(tmp_path):
    with pytest.raises(CloudMatrixError) as e:
        load_system("hgx-h200").for_backend("sgl")
    assert "sglang" in str(e.value) and "\n" not in str(e.value)
    text = (CATALOG / "h200-sxm.toml").read_text() + "\n[efficiency.backend.sgl.grouped_gemm]\npeak = 0.5\n"
    bad = tmp_path / "chip.toml"
    bad.write_text(text)
    with pytest.raises(CloudMatrixError) as e:
        load_chip(bad)
    msg = str(e.value)
    assert "unknown backend" in msg and "sgl" in msg and "\n" not in msg
