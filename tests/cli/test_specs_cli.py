"""`cloudmatrix specs ...` through the real entry point (cloudmatrix.cli.main:app).

Most cases run the entry point in-process (fast); one runs the installed console script in a
subprocess to prove the end-to-end contract: exit 2, one line, no traceback.
"""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

CATALOG = Path(__file__).parents[2] / "src" / "cloudmatrix" / "specs" / "catalog" / "hardware"


def test_hardware_lists_systems_and_chips(cli):
    code, out, _ = cli("specs", "hardware")
    assert code == 0
    for name in ("cloudmatrix384", "gb200-nvl72", "gb300-nvl72", "hgx-h800", "hgx-b200", "h200-sxm", "gb300"):
        assert name in out
    assert "180.0" in out  # NVL72 dense BF16 PFLOPS


def test_hardware_with_nodes_and_own_file(cli, tmp_path):
    chip = (CATALOG / "h800-sxm.toml").read_text().replace('name = "h800-sxm"', 'name = "my-h800"')
    (tmp_path / "my-h800.toml").write_text(chip)
    code, out, _ = cli("specs", "hardware", "--nodes", "4", "--hardware", str(tmp_path / "my-h800.toml"))
    assert code == 0 and "my-h800" in out and "32 x h800-sxm" in out


def test_model_tables_and_json(cli):
    code, out, _ = cli("specs", "model", "deepseek-r1")
    assert code == 0
    assert "671.03" in out and "37.55" in out and "576 x 61" in out
    code, out, _ = cli("specs", "model", "qwen3-235b-a22b", "--json", "-c", "8192")
    d = json.loads(out)
    assert code == 0 and d["head_dim"] == 128 and d["kv_bytes_per_token"]["bf16"] == 2 * 4 * 128 * 94 * 2
    assert list(d["flops_per_token"]) == ["8192"]


def test_model_from_a_config_path(cli, tmp_path):
    cfg = {
        "model_type": "llama",
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "intermediate_size": 128,
        "vocab_size": 100,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    code, out, _ = cli("specs", "model", str(tmp_path), "--json")
    assert code == 0 and json.loads(out)["layers"] == 2


def test_compare_json_reproduces_published_ratios(cli):
    code, out, _ = cli("specs", "compare", "cloudmatrix384", "gb200-nvl72", "--json")
    r = json.loads(out)["ratios_first_over_second"]
    assert code == 0
    assert 1.6 <= r["compute"] <= 1.71 and r["memory"] == pytest.approx(3.6, abs=0.1)
    assert r["memory_bandwidth"] == pytest.approx(2.1, abs=0.05) and r["power"] == pytest.approx(3.9, abs=0.1)


def test_compare_table_and_nodes(cli):
    code, out, _ = cli("specs", "compare", "hgx-h800", "gb200-nvl72", "--nodes", "18")
    assert code == 0 and "144 x h800-sxm" in out and "ratio" in out


@pytest.mark.parametrize(
    "args, needle",
    [
        (["specs", "compare", "nvl-9000", "gb200-nvl72"], "unknown system 'nvl-9000'"),
        (["specs", "compare", "cloudmatrix384", "gb200-nvl72", "--nodes", "4"], "have a fixed size"),
        (["specs", "compare", "cloudmatrix384", "gb200-nvl72", "--precision", "fp8"], "no native fp8"),
        (["specs", "model", "gpt-9"], "unknown model 'gpt-9'"),
        (["specs", "hardware", "--nodes", "0"], "positive"),
    ],
)
def test_user_errors_exit_2_with_one_line(cli, args, needle):
    code, out, err = cli(*args)
    assert code == 2 and needle in err and err.strip().count("\n") == 0 and "Traceback" not in err


@pytest.mark.parametrize(
    "edit, needle",
    [
        (lambda s: s.replace('hbm_capacity = "80 GB"', ""), "die.hbm_capacity: missing"),
        (lambda s: s.replace('"80 GB"', '"-80 GB"'), "die.hbm_capacity: Input should be greater than 0"),
        (lambda s: s.replace('"3.35 TB/s"', '"3.35 TQ/s"'), "unknown unit 'TQ/s'"),
        (lambda s: s.replace("[die]", "[die"), "not valid TOML"),
    ],
)
def test_bad_chip_file_through_the_cli(cli, tmp_path, edit, needle):
    bad = tmp_path / "bad-chip.toml"
    bad.write_text(edit((CATALOG / "h800-sxm.toml").read_text()))
    code, _, err = cli("specs", "hardware", "--hardware", str(bad))
    assert code == 2 and "bad-chip.toml" in err and needle in err and "Traceback" not in err


def test_bad_chip_reference_through_the_cli(cli, tmp_path):
    sys_file = tmp_path / "my-cluster.toml"
    sys_file.write_text((CATALOG / "hgx-h800.toml").read_text().replace('chip = "h800-sxm"', 'chip = "h900"'))
    code, _, err = cli("specs", "compare", str(sys_file), "hgx-h800")
    assert code == 2 and "my-cluster.toml: chip = 'h900' cannot be loaded" in err


def test_unsupported_architecture_through_the_cli(cli, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    code, _, err = cli("specs", "model", str(tmp_path))
    assert code == 2 and "unsupported architecture model_type='gpt2'" in err


@pytest.mark.skipif(shutil.which("cloudmatrix") is None, reason="console script not installed")
def test_console_script_error_contract(tmp_path):
    p = subprocess.run(
        ["cloudmatrix", "specs", "compare", "cloudmatrix384", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and "does not exist" in p.stderr
    assert "Traceback" not in p.stderr and p.stderr.strip().count("\n") == 0


def test_non_utf8_files_given_to_commands_are_one_line_errors(cli, tmp_path):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    cfg = tmp_path / "config.json"
    cfg.write_bytes(b'{"model_type": "\xff"}')
    for args in (
        ("specs", "hardware", "--hardware", str(bad)),
        ("specs", "model", str(cfg)),
        ("step", "--system", str(bad)),
        ("step", "--model", str(cfg)),
    ):
        code, _, err = cli(*args)
        assert code == 2, args
        assert "is not UTF-8 text" in err and err.count("\n") == 1, (args, err)


def test_names_with_brackets_print_verbatim(cli, tmp_path):
    # names come from user files; rich read "[/x]" as a closing tag and raised MarkupError
    hw = Path(__file__).parents[2] / "src" / "cloudmatrix" / "specs" / "catalog" / "hardware"
    chip = tmp_path / "chip.toml"
    chip.write_text((hw / "h800-sxm.toml").read_text().replace('name = "h800-sxm"', 'name = "my[/x]chip"'))
    system = tmp_path / "system.toml"
    system.write_text(
        (hw / "hgx-h800.toml")
        .read_text()
        .replace('name = "hgx-h800"', 'name = "sys[/x]"')
        .replace('chip = "h800-sxm"', 'chip = "chip.toml"')
    )
    code, out, err = cli("specs", "hardware", "--hardware", str(chip), "--hardware", str(system))
    assert code == 0, err
    assert "my[/x]chip" in out and "sys[/x]" in out
    code, out, err = cli("specs", "compare", str(system), "hgx-h100")
    assert code == 0 and "sys[/x] vs hgx-h100" in out, err
    code, out, err = cli(
        "step", "--system", str(system), "--nodes", "8", "--ep", "64", "--precision", "fp8", "--batch-per-die", "4"
    )
    assert code == 0 and "on sys[/x], per die" in out, err
