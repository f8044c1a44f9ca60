"""LLMEngine: continuous batching, prefix caching and MTP give exactly the one-at-a-time greedy tokens."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cloudmatrix.engine.generate import greedy_generate  # noqa: E402
from cloudmatrix.engine.loader import load_model  # noqa: E402
from cloudmatrix.engine.runtime import EngineConfig, LLMEngine, SamplingParams  # noqa: E402

# Small blocks and a small token budget: prompts are chunked and steps mix decode and prefill.
SMALL = dict(block_size=4, kv_cache_tokens=1024, max_num_seqs=4, max_num_batched_tokens=8)


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir, mtp=True)


@pytest.fixture(scope="module")
def workload(prompts):
    g = torch.Generator().manual_seed(5)
    extra = [torch.randint(3, 96, (n,), generator=g).tolist() for n in (11, 1, 25)]
    return [(p, n) for p, n in zip(prompts + extra, [12, 5, 20, 9, 16, 7], strict=True)]


def alone(model, prompt, max_tokens):
    return greedy_generate(model, [prompt], max_tokens).tokens[0]


def record_batches(engine):
    shapes = []
    real = engine.scheduler.schedule

    def spy():
        b = real()
        shapes.append((len(b.decode), [e - s for s, e in zip(b.starts, b.ends, strict=True)], b))
        return b

    engine.scheduler.schedule = spy
    return shapes


@pytest.mark.parametrize("speculative", [False, True])
def test_continuous_batching_matches_one_at_a_time(model, workload, speculative):
    engine = LLMEngine.from_model(model, config=EngineConfig(**SMALL, speculative=speculative))
    shapes = record_batches(engine)
    got: dict[str, list[int]] = {}
    finished_at: dict[str, int] = {}
    arrivals = {0: [0, 1], 3: [2, 3], 5: [4], 9: [5]}  # step -> requests that arrive before it
    step = 0
    while step <= max(arrivals) or engine.has_unfinished():
        for i in arrivals.get(step, []):
            engine.add_request(f"r{i}", workload[i][0], SamplingParams(max_tokens=workload[i][1]))
        for out in engine.step():
            got.setdefault(out.request_id, []).extend(out.new_token_ids)
            if out.finished:
                assert out.finish_reason == "length" and out.output_tokens == workload[int(out.request_id[1:])][1]
                finished_at[out.request_id] = step
        step += 1
    for i, (p, n) in enumerate(workload):
        assert got[f"r{i}"] == alone(model, p, n), f"request {i}"
    assert len(set(finished_at.values())) > 3  # they really finished at different steps
    assert any(d and chunks for d, chunks, _ in shapes)  # decode and prefill in one pass
    assert any(b.ends[k] < b.prefill[k].prompt_len for _, _, b in shapes for k in range(len(b.prefill)))  # chunked
    assert max(d for d, _, _ in shapes) == SMALL["max_num_seqs"]  # the slot limit was reached: some waited
    s = engine.stats()
    assert s.running == s.waiting == 0 and s.tokens_out == sum(n for _, n in workload)
    assert (s.mtp_drafted > 0) == speculative and 0 <= s.mtp_accepted <= s.mtp_drafted


class TokenCounter:
    """Counts tokens entering the main model (its embedding lookups) — independent of the engine's books."""

    def __init__(self, model):
        self.n = 0
        self.handle = model.embed_tokens.register_forward_pre_hook(self)

    def __call__(self, module, args):
        self.n += args[0].numel()


@pytest.mark.parametrize("speculative", [False, True])
def test_prefix_cache_hit_skips_recomputation_and_gives_the_same_tokens(model, prompts, speculative):
    a = prompts[2]  # 18 tokens
    b = a[:13] + [50, 51, 52, 53, 54]  # shares 3 full blocks of 4 with a, diverges inside the 4th
    cfg = dict(SMALL, speculative=speculative)
    engine = LLMEngine.from_model(model, config=EngineConfig(**cfg))
    first = engine.generate([a], SamplingParams(max_tokens=6))[0]
    assert first.cached_tokens == 0
    counter = TokenCounter(model)
    try:
        second = engine.generate([b], SamplingParams(max_tokens=6))[0]
    finally:
        counter.handle.remove()
    plain = LLMEngine.from_model(model, config=EngineConfig(**cfg, enable_prefix_caching=False))
    assert second.token_ids == plain.generate([b], SamplingParams(max_tokens=6))[0].token_ids
    assert second.token_ids == alone(model, b, 6)
    assert second.cached_tokens == 12
    s = engine.stats()
    assert s.prefix_queries == 2 and s.prefix_hits == 12
    assert s.prefill_tokens_computed == len(a) + len(b) - 12
    # the model saw b's 6 uncached prompt tokens and one input per decode step (MTP's own embedding
    # lookups of the verification passes come on top when speculating)
    per_pass = 2 if speculative else 1
    assert counter.n >= (len(b) - 12) * per_pass
    if not speculative:
        assert counter.n == (len(b) - 12) + 5


def test_a_whole_cached_prompt_still_computes_its_last_token(model, prompts):
    engine = LLMEngine.from_model(model, config=EngineConfig(**SMALL, speculative=False))
    p = prompts[0] + [1, 2, 3, 4, 5]  # 12 tokens = 3 full blocks
    one = engine.generate([p], SamplingParams(max_tokens=4))[0]
    two = engine.generate([p], SamplingParams(max_tokens=4))[0]
    assert one.token_ids == two.token_ids == alone(model, p, 4)
    assert two.cached_tokens == 8  # 2 blocks; the third holds the last prompt token, which is recomputed


def test_blocks_held_by_the_prefix_cache_are_evicted_when_a_request_needs_them(model):
    g = torch.Generator().manual_seed(9)
    cfg = EngineConfig(block_size=4, kv_cache_tokens=48, max_num_seqs=2, max_num_batched_tokens=64, speculative=False)
    engine = LLMEngine.from_model(model, config=cfg)
    for _ in range(4):  # each prompt leaves 5 full blocks in the cache; the pool has 12
        p = torch.randint(3, 96, (20,), generator=g).tolist()
        assert engine.generate([p], SamplingParams(max_tokens=8))[0].token_ids == alone(model, p, 8)
    assert engine.scheduler.cache.evicted_blocks > 0
    assert engine.stats().kv_blocks_used <= cfg.num_blocks


def test_model_dir_engine_reads_tokenizer_eos_and_mtp(model_dir):
    engine = LLMEngine(model_dir, config=EngineConfig(**SMALL))
    assert engine.eos_token_ids == frozenset({1}) and len(engine.model.mtp) == 1
    assert engine.max_model_len == 512 and engine.model_name == model_dir.name
    out = engine.generate(["To be, or not"], SamplingParams(max_tokens=10, ignore_eos=True))[0]
    assert len(out.token_ids) == 10 and out.finish_reason == "length"
    assert out.text == engine.tokenizer.decode(out.token_ids, skip_special_tokens=True)
