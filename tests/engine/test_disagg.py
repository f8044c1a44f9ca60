"""Prefill and decode in separate processes (a 2-rank decode EP group), KV handed over through the shared
caching pool, give the tokens of one process; a shared prefix is served from the pool (counted)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

from cloudmatrix.engine.disagg import DisaggConfig, DisaggregatedEngine  # noqa: E402
from cloudmatrix.engine.loader import load_model, random_state  # noqa: E402
from cloudmatrix.engine.model.config import ModelConfig  # noqa: E402
from cloudmatrix.engine.runtime.params import SamplingParams  # noqa: E402

from .tiny_configs import TINY_MODEL  # noqa: E402

SHARED = [3, 14, 15, 92, 65, 35, 89, 79]  # two full blocks of 4: cached after the first request
REQUESTS = {
    "a": (SHARED + [32, 38], 6),
    "b": ([26, 43, 38], 3),
    "c": ([2, 71, 82, 81, 82, 84, 59], 9),
    "d": (SHARED + [46, 26, 43], 5),  # same prefix as "a": its first 8 tokens come from the pool
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("disagg-ckpt")
    save_file(random_state(ModelConfig.from_dict(dict(TINY_MODEL)), seed=5), folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(TINY_MODEL))
    return folder


@torch.inference_mode()
def _one_process_greedy(model, prompt: list[int], n: int) -> list[int]:
    cache = model.new_cache(num_blocks=16, block_size=4)
    sid = cache.add_sequence()
    h = model(torch.tensor(prompt), cache.plan([sid], [len(prompt)]), cache)
    toks = [int(model.logits(h[-1:]).argmax(-1))]
    while len(toks) < n:
        h = model(torch.tensor(toks[-1:]), cache.plan([sid], [1]), cache)
        toks.append(int(model.logits(h).argmax(-1)))
    return toks


def _run(engine, names, deadline_s=60.0) -> dict:
    got: dict[str, list[int]] = {n: [] for n in names}
    reasons, cached = {}, {}
    end = time.monotonic() + deadline_s
    while engine.has_unfinished():
        assert time.monotonic() < end, "the disaggregated engine did not finish in time"
        for out in engine.step():
            got[out.request_id] += out.new_token_ids
            if out.finished:
                reasons[out.request_id], cached[out.request_id] = out.finish_reason, out.cached_tokens
    return {"tokens": got, "reasons": reasons, "cached": cached}


@pytest.fixture(scope="module")
def engine(checkpoint):
    """One deployment for the module (three processes start once): a prefill worker, a 2-rank decode group."""
    eng = DisaggregatedEngine(checkpoint, config=DisaggConfig(decode_ep=2, block_size=4, pool_blocks=128,
                                                              decode_cache_blocks=64, prefill_cache_blocks=32))
    try:
        yield eng
    finally:
        eng.close()
    assert all(not p.is_alive() for w in [eng.prefill, *eng.decode] for p in w.procs)  # closed cleanly


def test_disaggregated_matches_one_process(engine, checkpoint):
    ref = load_model(checkpoint)
    expected = {k: _one_process_greedy(ref, p, n) for k, (p, n) in REQUESTS.items()}
    assert set(engine.pids) == {"prefill", "decode0.0", "decode0.1"} and len(set(engine.pids.values())) == 3
    assert engine.health()["status"] == "ok"
    for k in ("a", "b", "c"):
        p, n = REQUESTS[k]
        engine.add_request(k, p, SamplingParams(max_tokens=n))
    first = _run(engine, ["a", "b", "c"])
    p, n = REQUESTS["d"]
    engine.add_request("d", p, SamplingParams(max_tokens=n))  # after "a" published its blocks
    second = _run(engine, ["d"])
    stats = engine.stats()
    got = {**first["tokens"], **second["tokens"]}
    assert got == expected
    assert all(r == "length" for r in {**first["reasons"], **second["reasons"]}.values())
    assert second["cached"]["d"] == len(SHARED) and first["cached"]["a"] == 0
    assert stats.prefix_hits == len(SHARED)
    assert stats.prefill_tokens_computed == sum(len(p) for p, _ in REQUESTS.values()) - len(SHARED)
    assert stats.tokens_out == sum(n for _, n in REQUESTS.values())


@torch.inference_mode()
def _greedy_with_reprefill(model, prompt: list[int], n: int, at: list[int]) -> list[int]:
    """One process, doing what a hand-back does: after `at[i]` tokens, drop the cache, prefill prompt +
    output but the last token anew (the naive attention path) and decode on from the last token."""
    toks = _one_process_greedy(model, prompt, min(n, at[0])) if at else _one_process_greedy(model, prompt, n)
    for i, k in enumerate(at):
        end = at[i + 1] if i + 1 < len(at) else n
        cache = model.new_cache(num_blocks=32, block_size=4)
        sid = cache.add_sequence()
        ctx = prompt + toks[: k - 1]
        model(torch.tensor(ctx), cache.plan([sid], [len(ctx)]), cache)
        while len(toks) < end:
            h = model(torch.tensor(toks[-1:]), cache.plan([sid], [1]), cache)
            toks.append(int(model.logits(h).argmax(-1)))
    return toks


LONG = {"x": ([5, 6, 7, 8, 9, 10], 24), "y": ([11, 12, 13], 20), "z": ([40, 41, 42, 43, 44], 22)}


def test_killed_workers_lose_no_tokens_and_restart_warm(engine, checkpoint):
    """SIGKILL a decode rank mid-stream: its group's requests are handed over again from the pool (only the
    uncached tokens re-prefilled) to the restarted group, and their streams go on with nothing lost or
    repeated. SIGKILL the prefill worker: its request is sent again to the restarted one."""
    ref = load_model(checkpoint)
    expected = {k: _one_process_greedy(ref, p, n) for k, (p, n) in LONG.items()}
    expected["w"] = _one_process_greedy(ref, [7, 7, 7, 1, 2], 4)
    hits_before = engine.stats().prefix_hits
    for k, (p, n) in LONG.items():
        engine.add_request(k, p, SamplingParams(max_tokens=n))
    got: dict[str, list[int]] = {k: [] for k in [*LONG, "w"]}
    end = time.monotonic() + 90
    victim = engine.pids["decode0.1"]
    killed, degraded = False, False
    while engine.has_unfinished():
        assert time.monotonic() < end, "did not recover in time"
        for out in engine.step():
            got[out.request_id] += out.new_token_ids
            assert out.finish_reason in (None, "length")
        if not killed and all(len(got[k]) >= 3 for k in LONG):
            os.kill(victim, signal.SIGKILL)
            killed = True
        degraded |= engine.health()["status"] == "degraded"
    assert killed and degraded
    assert engine.health() == {"status": "ok", "workers": {"prefill": "ok", "decode0": "ok"},
                               "restarts": {"decode0": 1}}  # fmt: skip
    assert victim not in engine.pids.values()
    # the hand-back read each prompt's full block from the pool (x: 4 tokens, z: 4, y has none) and
    # re-prefilled only the rest; the first prefills had no shared prefix
    assert engine.stats().prefix_hits - hits_before == 8
    assert {k: got[k] for k in LONG} == {k: expected[k] for k in LONG}

    os.kill(engine.pids["prefill"], signal.SIGKILL)
    engine.add_request("w", [7, 7, 7, 1, 2], SamplingParams(max_tokens=4))
    while engine.has_unfinished():
        assert time.monotonic() < end + 60, "prefill did not recover in time"
        for out in engine.step():
            got[out.request_id] += out.new_token_ids
    assert got["w"] == expected["w"]
    assert engine.health()["restarts"] == {"decode0": 1, "prefill": 1}


def test_requests_the_workers_cannot_hold_are_refused(engine):
    from cloudmatrix.errors import CloudMatrixError

    with pytest.raises(CloudMatrixError, match="do not fit the workers' KV caches"):
        engine.add_request("big", list(range(1, 90)) * 2, SamplingParams(max_tokens=100))
    with pytest.raises(CloudMatrixError, match="already running"):
        engine.add_request("dup", [1, 2], SamplingParams(max_tokens=2))
        engine.add_request("dup", [1, 2], SamplingParams(max_tokens=2))
    engine.abort("dup")
    end = time.monotonic() + 30
    while engine.has_unfinished():
        assert time.monotonic() < end
        engine.step()
    assert engine.stats().running == 0
