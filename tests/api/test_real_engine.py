"""The server on the real engine (LLMEngine, the packaged default model): the openai client's completions and
chat (streamed and not) give the engine's own greedy tokens, and a client that hangs up frees its KV blocks."""

from __future__ import annotations

import time

import httpx
import pytest

torch = pytest.importorskip("torch")
openai = pytest.importorskip("openai")
runtime = pytest.importorskip("cloudmatrix.engine.runtime.engine")

from cloudmatrix.api.app import ServerConfig, create_app  # noqa: E402
from cloudmatrix.api.server import BackgroundServer  # noqa: E402
from cloudmatrix.engine.runtime.params import EngineConfig, SamplingParams  # noqa: E402

NAME = "cloudmatrix-default"
CONFIG = EngineConfig(kv_cache_tokens=4096, max_num_seqs=8)


@pytest.fixture(scope="module")
def served():
    torch.set_num_threads(1)
    engine = runtime.LLMEngine(config=CONFIG)
    app = create_app(engine, ServerConfig(model_name=NAME, model_dir=runtime.DEFAULT_MODEL_DIR))
    with BackgroundServer(app) as url:
        yield url, engine, app.state.server


@pytest.fixture(scope="module")
def reference():
    """A second engine on the same weights, driven directly (no HTTP)."""
    return runtime.LLMEngine(config=CONFIG)


def client(url: str):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_completion_is_the_engines_greedy_output(served, reference):
    url, _, _ = served
    prompt = "HAMLET.\nTo be, or not to be"
    got = client(url).completions.create(model=NAME, prompt=prompt, max_tokens=24, temperature=0)
    want = reference.generate([prompt], SamplingParams(max_tokens=24))[0]
    assert got.choices[0].text == want.text and want.text.strip()
    assert got.usage.completion_tokens == len(want.token_ids)
    assert got.choices[0].finish_reason == want.finish_reason


def test_streamed_chat_equals_the_whole_reply_and_reads_as_text(served, reference):
    url, _, server = served
    c = client(url)
    msgs = [{"role": "user", "content": "What say you of the king?"}]
    whole = c.chat.completions.create(model=NAME, messages=msgs, max_tokens=30)
    stream = c.chat.completions.create(model=NAME, messages=msgs, max_tokens=30, stream=True)
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert text == whole.choices[0].message.content
    prompt = server.template.render(msgs)
    assert text == reference.generate([prompt], SamplingParams(max_tokens=30))[0].text
    visible = [ch for ch in text if not ch.isspace()]
    assert len(text.split()) >= 5 and sum(ch.isalpha() for ch in visible) > 0.6 * len(visible)


def test_disconnect_aborts_and_frees_kv_blocks(served):
    url, engine, server = served
    baseline = engine.stats().kv_blocks_used
    body = {"model": NAME, "prompt": "KING LEAR.\nBlow, winds, and crack your cheeks!", "max_tokens": 150,
            "stream": True, "ignore_eos": True}  # fmt: skip
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=120) as r:
        seen = 0
        for line in r.iter_lines():
            if line.startswith("data: {"):
                seen += 1
                if seen == 30:
                    during = engine.stats()
                    break
    prompt_blocks = len(engine.tokenizer.encode(body["prompt"]).ids) // CONFIG.block_size
    assert during.running == 1 and during.kv_blocks_used > baseline + prompt_blocks
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (server.loop.pending() or engine.stats().running):
        time.sleep(0.05)
    after = engine.stats()
    assert server.loop.pending() == 0 and after.running == 0 and after.waiting == 0
    # Only the prompt's full blocks may stay, held by the prefix cache for the next request with that prefix.
    assert baseline <= after.kv_blocks_used <= baseline + prompt_blocks
    assert after.tokens_out - during.tokens_out < 150 - 30  # it stopped well before max_tokens
