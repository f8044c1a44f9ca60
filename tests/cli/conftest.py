"""Run the console-script function in-process."""

import sys

import pytest

from cloudmatrix.cli import main


@pytest.fixture
def cli(monkeypatch, capsys):
    """Call `cloudmatrix ARGS...`; return (exit code, stdout, stderr)."""

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["cloudmatrix", *args])
        code = 0
        try:
            main.app()
        except SystemExit as e:
            code = e.code or 0
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
