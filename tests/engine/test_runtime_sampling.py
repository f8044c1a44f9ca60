"""Sampling: seeds reproduce, filters keep what they should, text comes out incrementally."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cloudmatrix.engine.loader import load_model  # noqa: E402
from cloudmatrix.engine.runtime import EngineConfig, LLMEngine, SamplingParams  # noqa: E402
from cloudmatrix.engine.runtime.sampling import filter_logits  # noqa: E402
from cloudmatrix.engine.runtime.tokenizer import IncrementalDetokenizer, load_tokenizer  # noqa: E402

CFG = dict(block_size=4, kv_cache_tokens=512, max_num_batched_tokens=16)


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir, mtp=True)


def run(model, requests, speculative=False):
    engine = LLMEngine.from_model(model, config=EngineConfig(**CFG, speculative=speculative))
    return [c.token_ids for c in engine.generate([p for p, _ in requests], [s for _, s in requests])]


@pytest.mark.parametrize("speculative", [False, True])
def test_a_seed_reproduces_its_tokens_alone_or_in_company(model, prompts, speculative):
    hot = SamplingParams(max_tokens=16, temperature=1.5, seed=7)
    a = run(model, [(prompts[0], hot)], speculative)[0]
    b = run(model, [(prompts[0], hot)], speculative)[0]
    company = run(model, [(prompts[1], SamplingParams(max_tokens=9, temperature=1.0)), (prompts[0], hot)], speculative)
    other = run(model, [(prompts[0], SamplingParams(max_tokens=16, temperature=1.5, seed=8))], speculative)[0]
    greedy = run(model, [(prompts[0], SamplingParams(max_tokens=16))], speculative)[0]
    assert a == b == company[1]
    assert other != a and greedy != a  # the seed and the temperature both matter


def test_top_k_one_is_greedy(model, prompts):
    greedy = run(model, [(prompts[2], SamplingParams(max_tokens=12))])[0]
    assert run(model, [(prompts[2], SamplingParams(max_tokens=12, temperature=0.8, top_k=1, seed=3))])[0] == greedy


def test_filters_keep_the_top_k_and_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]]))
    probs = filter_logits(logits, torch.ones(3), torch.tensor([0, 2, 0]), torch.tensor([0.7, 1.0, 1.0]))
    # row 0: 0.5 alone is under 0.7, 0.5 + 0.3 crosses it -> the two first stay, renormalised
    torch.testing.assert_close(probs[0], torch.tensor([0.625, 0.375, 0.0, 0.0]))
    torch.testing.assert_close(probs[1], torch.tensor([0.0, 0.0, 3 / 7, 4 / 7]))  # top-2
    torch.testing.assert_close(probs[2], torch.full((4,), 0.25))  # no filter
    hot = filter_logits(logits[:1], torch.tensor([2.0]), torch.tensor([0]), torch.tensor([1.0]))[0]
    assert hot[0] < 0.5 and hot[3] > 0.05  # a higher temperature flattens


def test_sampled_frequencies_follow_the_filtered_distribution(model):
    from cloudmatrix.engine.runtime.sampling import RowSampler, sample

    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]])).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    rows = [RowSampler(SamplingParams(temperature=1.0, top_k=2), g)] * 4000
    counts = torch.bincount(torch.tensor(sample(logits, rows)), minlength=3)
    assert counts[2] == 0 and abs(counts[0] / 4000 - 2 / 3) < 0.03


def test_incremental_detokenizer_holds_back_a_possible_stop_string(model_dir):
    tok = load_tokenizer(model_dir)
    ids = tok.encode("To be, or not to be, that is the question").ids
    d = IncrementalDetokenizer(tok)
    assert "".join(d.add([t]) for t in ids) + d.flush() == tok.decode(ids)
    s = IncrementalDetokenizer(tok, stop=("that is",))
    pieces = [s.add([t]) for t in ids]
    assert "".join(pieces) == "To be, or not to be, " and s.stopped
    assert not any("th" in p for p in pieces)  # the start of the stop string was never emitted
