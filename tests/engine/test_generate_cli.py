"""`cloudmatrix generate` through the real entry point on a tiny model folder."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "cloudmatrix.cli.main", "generate", *args], capture_output=True, text=True, timeout=300
    )


def test_generate_prints_the_engines_text(model_dir):
    from cloudmatrix.engine.runtime import EngineConfig, LLMEngine, SamplingParams

    out = run("To be, or not", "--model", str(model_dir), "--max-tokens", "12", "--ignore-eos", "--stats")
    assert out.returncode == 0, out.stderr
    expected = LLMEngine(model_dir, config=EngineConfig()).generate(
        ["To be, or not"], SamplingParams(max_tokens=12, ignore_eos=True)
    )[0]
    assert out.stdout == expected.text + "\n" and expected.text
    assert "12 generated tokens" in out.stderr and "MTP acceptance" in out.stderr


def test_sampling_flags_and_seed_reproduce(model_dir):
    args = ("Whether", "--model", str(model_dir), "--max-tokens", "10", "--temperature", "1.2", "--top-p", "0.9")
    a, b = run(*args, "--seed", "4"), run(*args, "--seed", "4")
    assert a.returncode == 0 and a.stdout == b.stdout


@pytest.mark.parametrize(
    "args, message",
    [(("--temperature", "-1"), "temperature"), (("--model", "/nonexistent/dir"), "config.json")],
)
def test_bad_flags_exit_2_with_one_line(model_dir, args, message):
    out = run("hi", "--model", str(model_dir), *args) if "--model" not in args else run("hi", *args)
    assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1
