"""`cloudmatrix compare` through the real entry point: a small run and one-line errors with exit 2."""

import json

import pytest


def test_compare_json_and_files(cli, tmp_path):
    code, out, _ = cli("compare", "--systems", "gb200-nvl72", "--out", str(tmp_path / "o"), "--json")
    assert code == 0
    d = json.loads(out)
    (s,) = d["systems"]
    assert s["system"] == "gb200-nvl72" and s["tpot_s"] <= 0.05
    assert s["output_tokens_per_s"] == pytest.approx(s["output_tokens_per_s_per_chip"] * 72)
    assert (tmp_path / "o" / "compare.html").exists()


def test_compare_table(cli, tmp_path):
    code, out, _ = cli("compare", "--systems", "cloudmatrix384", "--out", str(tmp_path))
    assert code == 0
    assert "cloudmatrix384" in out and "out tok" in out and "compare.html" in out


def test_default_compare_fits_100_columns_and_wide_has_every_column(cli, tmp_path, monkeypatch):
    from cloudmatrix.report.cross_system_report import COLUMNS

    monkeypatch.setenv("COLUMNS", "100")
    code, out, _ = cli("compare", "--out", str(tmp_path / "a"))
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 100, out
    for system in ("cloudmatrix384", "gb200-nvl72", "hgx-h800", "hgx-h100"):
        assert sum(system in line for line in out.splitlines()) == 2  # a row in each of the two tables
    code, wide, _ = cli("compare", "--wide", "--out", str(tmp_path / "b"))
    assert code == 0
    assert max(len(line) for line in wide.splitlines()) > 100
    header = " ".join(wide.splitlines()[:6])
    assert all(c in header for c in COLUMNS), header


@pytest.mark.parametrize(
    "args, message",
    [
        (["--systems", "foo"], "no serving layout"),
        (["--systems", ","], "--systems is empty"),
        (["--tpot-slo", "0"], "TPOT SLO must be positive"),
        (["--input-len", "-5"], "must be positive"),
        (["--years", "0"], "years must be positive"),
        (["--usd-per-kwh", "-0.1"], "usd_per_kwh must be positive"),
        (["--pue", "0.8"], "PUE"),
        (["--systems", "hgx-h800", "--tpot-slo", "0.001"], "no decode layout meets"),
        (["--tpot-slo", "inf"], "TPOT SLO must be positive and finite"),
        (["--tpot-slo", "nan"], "TPOT SLO must be positive and finite"),
        (["--pue", "inf"], "pue must be positive and finite"),
        (["--usd-per-kwh", "inf"], "usd_per_kwh must be positive and finite"),
        (["--years", "inf"], "years must be positive and finite"),
        (["--utilisation", "nan"], "utilisation must be positive"),
    ],
)
def test_compare_errors_exit_2(cli, tmp_path, args, message):
    code, out, err = cli("compare", "--out", str(tmp_path), *args)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_bad_out_paths_fail_before_the_sweep(cli, tmp_path):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    for out, message in ((a_file, "is a file, not a directory"), (a_file / "sub", "cannot create")):
        code, _, err = cli("compare", "--out", str(out))
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
