"""The fuzz tests' harness: run `cloudmatrix ARGS...` in-process, check what a user would see (a clean result
or one error line), and Hypothesis settings: few fixed examples in CI, more with CLOUDMATRIX_FUZZ_EXAMPLES.

Each test's example count is its CI share scaled by CLOUDMATRIX_FUZZ_EXAMPLES / 100 when that is set
(CLOUDMATRIX_FUZZ_EXAMPLES=2000 runs 20x the CI examples). The examples are derandomized: the same on every run,
so a CI failure reproduces locally; set CLOUDMATRIX_FUZZ_SEED=N to draw others (reproducible with the same N).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import sys
from typing import Any

from hypothesis import HealthCheck, seed, settings

from cloudmatrix.cli import main

_SCALE = int(os.environ.get("CLOUDMATRIX_FUZZ_EXAMPLES", "100")) / 100
_SEED = os.environ.get("CLOUDMATRIX_FUZZ_SEED")


def fuzz(ci_examples: int):
    """Decorator: Hypothesis settings for a test that runs `ci_examples` examples in CI."""
    s = settings(
        max_examples=max(1, round(ci_examples * _SCALE)),
        derandomize=_SEED is None,
        database=None,  # nothing written into the repository
        deadline=None,  # a simulate example can take a second on a busy machine
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        print_blob=True,
    )

    def wrap(test):
        test = s(test)
        return seed(int(_SEED))(test) if _SEED is not None else test

    return wrap


def run_cli(*args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the console-script entry point. Any exception other than SystemExit
    escapes: that is a traceback a user would see, and the test fails on it."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = ["cloudmatrix", *args]
    code: Any = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main.app()
    except SystemExit as e:
        code = e.code or 0
    finally:
        sys.argv = saved
    return code, out.getvalue(), err.getvalue()


def check_outcome(args: tuple[str, ...], code: int, out: str, err: str) -> bool:
    """Exit 0 (True: the caller checks the figures) or exit 2 with exactly one `error: ...` line (False)."""
    assert "Traceback" not in out + err, (args, err)
    if code == 2:
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) > len("error: "), (args, err)
        return False
    assert code == 0, (args, code, err)
    return True


def _no_constant(name: str) -> float:
    raise AssertionError(f"JSON output holds {name}")


def load_json(out: str) -> Any:
    """Parse --json output; NaN or Infinity anywhere in it fails (a user cannot tell it from a result)."""
    return json.loads(out, parse_constant=_no_constant)


def walk(node: Any, path: str = ""):
    """Yield (path, key, value) for every entry of nested dicts and lists."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield path, k, v
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


def assert_finite(node: Any) -> None:
    for path, key, v in walk(node):
        if isinstance(v, float):
            assert math.isfinite(v), f"{path}.{key} = {v}"
