"""The HTTP layer against an engine double: OpenAI shapes (openai client), SSE, every 4xx, 429, abort, timeout,
/metrics and /health. The double's tokens follow a rule the tests predict (see conftest.FakeEngine)."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from .fake_engine import MODEL, FakeEngine, serve

openai = pytest.importorskip("openai")


def client(url: str):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)


def expected_text(engine: FakeEngine, prompt: str, n: int) -> str:
    ids = engine.tokenizer.encode(prompt).ids
    return "".join(engine.tokenizer.decode([t]) for t in FakeEngine.expected_tokens(ids, n, engine.vocab))


def test_models_lists_the_served_model_and_unknown_is_404(server):
    url, _ = server
    c = client(url)
    assert [m.id for m in c.models.list().data] == [MODEL]
    assert c.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        c.models.retrieve("no-such-model")


def test_completion_text_usage_and_finish_reason(server):
    url, engine = server
    r = client(url).completions.create(model=MODEL, prompt="to be or not", max_tokens=5)
    assert r.object == "text_completion"
    assert r.choices[0].text == expected_text(engine, "to be or not", 5)
    assert r.choices[0].finish_reason == "length"
    n_prompt = len(engine.tokenizer.encode("to be or not").ids)
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (n_prompt, 5, n_prompt + 5)


def test_completion_accepts_token_ids(server):
    url, engine = server
    r = client(url).completions.create(model=MODEL, prompt=[7, 8, 9], max_tokens=3)
    toks = FakeEngine.expected_tokens([7, 8, 9], 3, engine.vocab)
    assert r.choices[0].text == "".join(engine.tokenizer.decode([t]) for t in toks)


def test_chat_stream_matches_non_stream_and_reports_usage(server):
    url, _ = server
    c = client(url)
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the quick brown fox"}]
    whole = c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=6)
    chunks = list(c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=6, stream=True,
                                            stream_options={"include_usage": True}))  # fmt: skip
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole.choices[0].message.content and text
    finals = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    assert whole.usage.prompt_tokens == chunks[-1].usage.prompt_tokens


def test_completion_stream_is_server_sent_events_ending_in_done(server):
    url, engine = server
    body = {"model": MODEL, "prompt": "the lazy dog", "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert "".join(e["choices"][0]["text"] for e in events) == expected_text(engine, "the lazy dog", 4)


def post(url: str, path: str, **kw) -> httpx.Response:
    return httpx.post(f"{url}{path}", timeout=30, **kw)


def one_line_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    msg = r.json()["error"]["message"]
    assert msg and "\n" not in msg
    return msg


@pytest.mark.parametrize(
    "body, words",
    [
        ('{"model": "fake-model", "prompt": "hi"', "malformed json"),
        ({"model": MODEL, "prompt": "hi", "max_tokens": "many"}, "max_tokens"),
        ({"model": MODEL, "prompt": "hi", "temperature": [1]}, "temperature"),
        ({"model": MODEL, "prompt": "hi", "n": 2}, "n=1"),
        ({"model": MODEL, "prompt": "hi", "bogus_field": 1}, "bogus_field"),
        ({"model": MODEL, "prompt": ""}, "empty"),
        ({"model": MODEL, "prompt": "   "}, "empty"),
        ({"model": MODEL, "prompt": []}, "empty"),
        ({"model": MODEL, "prompt": [5, 100000]}, "vocabulary"),
        ({"model": MODEL, "prompt": "hi", "max_tokens": 64}, "context"),
        ({"model": MODEL, "prompt": "hi", "top_k": 5000}, "top_k"),
        ({"prompt": "hi"}, "model"),
    ],
)
def test_completion_4xx_is_400_with_one_line_reason(server, body, words):
    url, engine = server
    kw = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, str) else {"json": body}
    msg = one_line_error(post(url, "/v1/completions", **kw), 400)
    assert words in msg.lower()
    assert engine.reqs == {}  # nothing reached the engine


def test_chat_4xx(server):
    url, _ = server
    assert "messages" in one_line_error(post(url, "/v1/chat/completions", json={"model": MODEL, "messages": []}), 400)
    bad_role = {"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}
    assert "role" in one_line_error(post(url, "/v1/chat/completions", json=bad_role), 400)
    empty = {"model": MODEL, "messages": [{"role": "user", "content": ""}]}
    assert "empty" in one_line_error(post(url, "/v1/chat/completions", json=empty), 400)
    long = {"model": MODEL, "messages": [{"role": "user", "content": "to be " * 40}], "max_tokens": 10}
    assert "context" in one_line_error(post(url, "/v1/chat/completions", json=long), 400)


def test_unknown_model_is_404(server):
    url, _ = server
    for path, body in [
        ("/v1/completions", {"model": "gpt-4", "prompt": "hi"}),
        ("/v1/chat/completions", {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}),
    ]:
        assert "gpt-4" in one_line_error(post(url, path, json=body), 404)  # fmt: skip
    with pytest.raises(openai.NotFoundError):
        client(url).completions.create(model="gpt-4", prompt="hi")


def test_full_queue_is_429_with_retry_after_and_accepted_requests_complete():
    engine = FakeEngine()
    engine.gate.clear()  # the engine stalls: accepted requests stay in flight
    with serve(engine, max_pending=2) as url:
        import concurrent.futures as cf

        body = {"model": MODEL, "prompt": "the quick", "max_tokens": 3}
        with cf.ThreadPoolExecutor(2) as pool:
            accepted = [pool.submit(post, url, "/v1/completions", json=body) for _ in range(2)]
            deadline = time.monotonic() + 10
            while httpx.get(f"{url}/health").json().get("pending") != 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            r = post(url, "/v1/completions", json=body)
            assert "busy" in one_line_error(r, 429)
            assert int(r.headers["retry-after"]) >= 1
            with pytest.raises(openai.RateLimitError):
                client(url).completions.create(**body)
            engine.gate.set()
            results = [f.result(timeout=30) for f in accepted]
        assert [x.status_code for x in results] == [200, 200]  # nothing accepted is lost
        assert all(x.json()["choices"][0]["text"] == expected_text(engine, "the quick", 3) for x in results)
        assert "request_rejected_queue_full_total" in httpx.get(f"{url}/metrics").text


def test_client_disconnect_aborts_the_request():
    # a request far longer than the test, produced at a real engine's pace (1 ms a step): at full Python speed the
    # double floods the event loop with outputs and the hang-up is noticed late on a loaded machine
    engine = FakeEngine(max_model_len=10_000_000, step_s=0.001)
    with serve(engine) as url:
        body = {"model": MODEL, "prompt": "the quick", "max_tokens": 9_000_000, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    break  # one token arrived: hang up
        deadline = time.monotonic() + 10
        while engine.reqs and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.reqs == {} and len(engine.aborted) == 1
        assert engine.kv_blocks_used() == 0


def test_non_streaming_client_disconnect_aborts_too():
    engine = FakeEngine(max_model_len=100_000, step_s=0.001)
    with serve(engine, poll_s=0.05) as url:
        body = {"model": MODEL, "prompt": "the quick", "max_tokens": 90_000}
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/completions", json=body, timeout=0.5)  # the client gives up and hangs up
        deadline = time.monotonic() + 10
        while engine.reqs and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.reqs == {} and len(engine.aborted) == 1


def test_request_timeout_is_504_and_aborts():
    engine = FakeEngine()
    engine.gate.clear()
    with serve(engine, request_timeout_s=0.3) as url:
        r = post(url, "/v1/completions", json={"model": MODEL, "prompt": "the quick", "max_tokens": 3})
        assert "timed out" in one_line_error(r, 504)
        engine.gate.set()
        deadline = time.monotonic() + 10
        while engine.reqs and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.reqs == {} and engine.aborted


def test_stream_past_its_timeout_ends_with_an_error_event_and_aborts():
    engine = FakeEngine(stall_from_step=3)  # steps 1-3 give a token each, step 4 waits
    with serve(engine, request_timeout_s=1.0) as url:
        body = {"model": MODEL, "prompt": "the quick", "max_tokens": 10, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=30) as r:
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        engine.gate.set()
        assert events[-1] == "[DONE]"
        error = json.loads(events[-2])["error"]
        assert error["code"] == 504 and "timed out" in error["message"]
        assert sum(1 for e in events[:-2] if json.loads(e).get("choices")) == 3
        deadline = time.monotonic() + 10
        while engine.reqs and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.reqs == {} and engine.aborted


def test_metrics_use_vllm_style_names(server):
    url, _ = server
    client(url).completions.create(model=MODEL, prompt="to be or not", max_tokens=4)
    text = httpx.get(f"{url}/metrics").text
    for name in ["time_to_first_token_seconds", "inter_token_latency_seconds", "e2e_request_latency_seconds",
                 "request_time_per_output_token_seconds", "num_requests_running", "num_requests_waiting",
                 "kv_cache_usage_perc", "prefix_cache_queries_total", "prefix_cache_hits_total",
                 "prompt_tokens_total", "generation_tokens_total"]:  # fmt: skip
        assert f"cloudmatrix:{name}" in text, name

    def value(metric: str) -> float:
        line = next(x for x in text.splitlines() if x.startswith(f"cloudmatrix:{metric}{{"))
        return float(line.rsplit(" ", 1)[1])

    assert value("time_to_first_token_seconds_count") == 1
    assert value("inter_token_latency_seconds_count") == 3  # 4 tokens, 3 gaps
    assert value("generation_tokens_total") == 4
    assert 'finished_reason="length"' in text


def test_health_ok_degraded_and_dead():
    engine = FakeEngine(fail_at_step=1)
    with serve(engine) as url:
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        engine.health_status = "degraded"
        # the engine thread snapshots health() once per loop turn (idle turns included): wait a few turns
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/health").json()["status"] != "degraded" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert httpx.get(f"{url}/health").json()["status"] == "degraded"
        r = post(url, "/v1/completions", json={"model": MODEL, "prompt": "the", "max_tokens": 2})
        assert r.status_code == 503 and "simulated engine fault" in r.json()["error"]["message"]
        h = httpx.get(f"{url}/health")
        assert h.status_code == 503 and h.json()["status"] == "error"
