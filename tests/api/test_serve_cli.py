"""`cloudmatrix serve` as a user runs it: a process on 127.0.0.1 that answers a streamed chat completion
(the README's curl exchange) and stops when terminated; bad flags are one-line errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytest.importorskip("torch")
pytest.importorskip("cloudmatrix.engine.runtime.engine")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cloudmatrix.cli.main", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)  # fmt: skip


def test_serve_answers_a_streamed_chat_completion_then_stops():
    port = free_port()
    proc = cli("serve", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if httpx.get(f"{url}/health", timeout=2).json()["status"] == "ok":
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.3)
        model = httpx.get(f"{url}/v1/models").json()["data"][0]["id"]
        body = {"model": model, "messages": [{"role": "user", "content": "What news from Verona?"}],
                "max_tokens": 24, "stream": True}  # fmt: skip
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as r:
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1]
                       if json.loads(e)["choices"])  # fmt: skip
        assert len(text.split()) >= 3
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, -signal.SIGINT)


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--port", "0"], "--port"),
        (["--max-pending", "0"], "--max-pending"),
        (["--model", "/nonexistent"], "config.json"),
        (["--max-num-seqs", "4"], "--single-process"),  # would be ignored by the worker processes
        (["--prefill", "2"], "--prefill"),
        (["--ray", "auto"], "--ray"),
        (["--single-process", "--ep", "4"], "--single-process"),
    ],
)
def test_bad_flags_are_one_line_errors(flags, words):
    proc = cli("serve", *flags)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in err
