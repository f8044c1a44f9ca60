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
    assert "cloudmatrix384" in out and "$/M out tok" in out and "compare.html" in out


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
    ],
)
def test_compare_errors_exit_2(cli, tmp_path, args, message):
    code, out, err = cli("compare", "--out", str(tmp_path), *args)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3  # one message (rich may wrap it)
