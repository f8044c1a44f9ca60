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


def wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if httpx.get(f"{url}/health", timeout=2).json()["status"] == "ok":
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "serve did not come up"
        time.sleep(0.3)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert proc.returncode in (0, -signal.SIGINT)


def test_serve_answers_a_streamed_chat_completion_then_stops():
    port = free_port()
    proc = cli("serve", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, url)
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
        stop(proc)


def test_serve_on_a_local_ray_cluster_gives_the_same_text():
    pytest.importorskip("ray")
    body = {"model": "cloudmatrix-default", "prompt": "HAMLET.\nTo be, or not to be", "max_tokens": 16}
    texts = []
    for flags in (["--single-process"], ["--ray", "local"]):
        port = free_port()
        proc = cli("serve", "--port", str(port), *flags)
        try:
            wait_healthy(proc, f"http://127.0.0.1:{port}")
            r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=120)
            texts.append(r.json()["choices"][0]["text"])
        finally:
            stop(proc)
    assert texts[0] == texts[1] and texts[0].strip()


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--port", "0"], "--port"),
        (["--max-pending", "0"], "--max-pending"),
        (["--model", "/nonexistent"], "config.json"),
        (["--max-num-seqs", "4"], "--single-process"),  # would be ignored by the worker processes
        (["--prefill", "2"], "--prefill"),
        (["--single-process", "--ray", "local"], "--ray"),
        (["--single-process", "--ep", "4"], "--single-process"),
    ],
)
def test_bad_flags_are_one_line_errors(flags, words):
    proc = cli("serve", *flags)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in err
