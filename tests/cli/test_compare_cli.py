"""`cloudmatrix compare` through the real entry point: a small run and one-line errors with exit 2."""

import json
import sys

import pytest

from cloudmatrix.cli import main


def run(monkeypatch, capsys, *args):
    groups, commands = list(main._app.registered_groups), list(main._app.registered_commands)
    monkeypatch.setattr(sys, "argv", ["cloudmatrix", *args])
    code = 0
    try:
        main.app()
    except SystemExit as e:
        code = e.code or 0
    finally:
        main._app.registered_groups[:] = groups
        main._app.registered_commands[:] = commands
    out = capsys.readouterr()
    return code, out.out, out.err


def test_compare_json_and_files(monkeypatch, capsys, tmp_path):
    code, out, _ = run(
        monkeypatch, capsys, "compare", "--systems", "gb200-nvl72", "--out", str(tmp_path / "o"), "--json"
    )
    assert code == 0
    d = json.loads(out)
    (s,) = d["systems"]
    assert s["system"] == "gb200-nvl72" and s["tpot_s"] <= 0.05
    assert s["output_tokens_per_s"] == pytest.approx(s["output_tokens_per_s_per_chip"] * 72)
    assert (tmp_path / "o" / "compare.html").exists()


def test_compare_table(monkeypatch, capsys, tmp_path):
    code, out, _ = run(monkeypatch, capsys, "compare", "--systems", "cloudmatrix384", "--out", str(tmp_path))
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
def test_compare_errors_exit_2(monkeypatch, capsys, tmp_path, args, message):
    code, out, err = run(monkeypatch, capsys, "compare", "--out", str(tmp_path), *args)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 3  # one message (rich may wrap it)
