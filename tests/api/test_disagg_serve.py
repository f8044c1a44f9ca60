"""The server on the disaggregated deployment `cloudmatrix serve` runs by default: a prefill worker process,
a decode EP group of 2 ranks and the caching pool. Through HTTP it gives the same greedy text as the
in-process engine, streams, and a client that hangs up is aborted in the workers."""

from __future__ import annotations

import time

import httpx
import pytest

torch = pytest.importorskip("torch")
openai = pytest.importorskip("openai")
disagg = pytest.importorskip("cloudmatrix.engine.disagg")

from cloudmatrix.api.app import ServerConfig, create_app  # noqa: E402
from cloudmatrix.api.server import BackgroundServer  # noqa: E402
from cloudmatrix.engine.runtime.engine import DEFAULT_MODEL_DIR, LLMEngine  # noqa: E402
from cloudmatrix.engine.runtime.params import EngineConfig, SamplingParams  # noqa: E402

NAME = "cloudmatrix-default"


@pytest.fixture(scope="module")
def served():
    torch.set_num_threads(1)
    engine = disagg.DisaggregatedEngine(DEFAULT_MODEL_DIR, config=disagg.DisaggConfig(decode_ep=2))
    try:
        app = create_app(engine, ServerConfig(model_name=NAME, model_dir=DEFAULT_MODEL_DIR))
        with BackgroundServer(app) as url:
            yield url, engine, app.state.server
    finally:
        engine.close()


def test_same_greedy_text_as_the_in_process_engine_and_concurrent_streams(served):
    url, _, server = served
    c = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    prompts = ["HAMLET.\nTo be, or not to be", "MACBETH.\nIs this a dagger which I see"]
    reference = LLMEngine(config=EngineConfig(kv_cache_tokens=2048)).generate(prompts, SamplingParams(max_tokens=20))
    import concurrent.futures as cf

    def streamed(prompt: str) -> str:
        chunks = c.completions.create(model=NAME, prompt=prompt, max_tokens=20, temperature=0, stream=True)
        return "".join(ch.choices[0].text for ch in chunks if ch.choices)

    with cf.ThreadPoolExecutor(2) as pool:
        texts = list(pool.map(streamed, prompts))
    assert texts == [r.text for r in reference]
    whole = c.completions.create(model=NAME, prompt=prompts[0], max_tokens=20, temperature=0)
    assert whole.choices[0].text == reference[0].text and whole.usage.completion_tokens == 20


def test_disconnect_aborts_in_the_workers(served):
    url, engine, server = served
    before = engine.stats().tokens_out
    body = {"model": NAME, "prompt": "KING LEAR.\nBlow, winds", "max_tokens": 200, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                break
    deadline = time.monotonic() + 30
    # The coordinator forgets an aborted request once its worker has acknowledged it: wait for that too.
    while time.monotonic() < deadline and (server.loop.pending() or engine.stats().running or engine.stats().waiting):
        time.sleep(0.05)
    stats = engine.stats()
    assert server.loop.pending() == 0 and stats.running == 0 and stats.waiting == 0
    assert stats.tokens_out - before < 200  # it stopped before max_tokens


def test_killed_decode_worker_stream_continues_with_no_lost_or_repeated_tokens(served):
    """Kill a decode rank by pid mid-stream: the group restarts warm, the request is handed over from the
    caching pool, and the client's stream reads exactly the in-process engine's greedy text."""
    import json
    import os
    import signal
    import threading

    url, engine, _ = served
    prompt = "OTHELLO.\nIt is the cause, it is the cause, my soul"
    want = LLMEngine(config=EngineConfig(kv_cache_tokens=2048)).generate(
        [prompt], SamplingParams(max_tokens=60, ignore_eos=True)
    )[0]
    statuses: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            statuses.append(httpx.get(f"{url}/health", timeout=10).json()["status"])
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    body = {"model": NAME, "prompt": prompt, "max_tokens": 60, "stream": True, "ignore_eos": True,
            "temperature": 0, "stream_options": {"include_usage": True}}  # fmt: skip
    pieces, usage, killed = [], None, None
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=180) as r:
        for line in r.iter_lines():
            if not line.startswith("data: {"):
                continue
            ev = json.loads(line[6:])
            if ev.get("usage"):
                usage = ev["usage"]
            pieces.extend(c["text"] for c in ev["choices"])
            if len(pieces) == 10 and killed is None:
                killed = engine.pids["decode0.0"]
                watcher.start()
                os.kill(killed, signal.SIGKILL)
    stop.set()
    watcher.join(10)
    assert killed is not None and engine.pids["decode0.0"] != killed  # a new incarnation serves
    assert "".join(pieces) == want.text
    assert usage["completion_tokens"] == 60
    assert "degraded" in statuses and httpx.get(f"{url}/health").json()["status"] == "ok"
    assert engine.health()["restarts"].get("decode0") == 1
