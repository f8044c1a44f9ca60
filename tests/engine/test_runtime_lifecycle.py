"""A request's life in LLMEngine: EOS, stop strings, max_tokens, abort (blocks freed), bad input."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cloudmatrix.engine.loader import load_model  # noqa: E402
from cloudmatrix.engine.runtime import EngineConfig, LLMEngine, SamplingParams  # noqa: E402
from cloudmatrix.errors import CloudMatrixError  # noqa: E402

CFG = dict(block_size=4, kv_cache_tokens=512, max_num_seqs=4, max_num_batched_tokens=16, enable_prefix_caching=False)


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir, mtp=True)


@pytest.fixture(scope="module")
def engine_for(model, model_dir):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))

    def make(eos=(), **overrides):
        return LLMEngine.from_model(model, tok, eos_token_ids=eos, config=EngineConfig(**{**CFG, **overrides}))

    return make


@pytest.mark.parametrize("speculative", [False, True])
def test_eos_ends_a_request_and_ignore_eos_runs_on(engine_for, prompts, speculative):
    full = engine_for(speculative=speculative).generate([prompts[0]], SamplingParams(max_tokens=20))[0]
    eos = full.token_ids[6]
    cut = full.token_ids[: full.token_ids.index(eos) + 1]
    engine = engine_for(eos=(eos,), speculative=speculative)
    got = engine.generate([prompts[0]], SamplingParams(max_tokens=20))[0]
    assert got.token_ids == cut and got.finish_reason == "stop"
    on = engine.generate([prompts[0]], SamplingParams(max_tokens=20, ignore_eos=True))[0]
    assert on.token_ids == full.token_ids and on.finish_reason == "length"
    assert engine.stats().kv_blocks_used == 0  # everything given back


@pytest.mark.parametrize("speculative", [False, True])
def test_stop_string_cuts_the_text_and_ends_the_request(engine_for, speculative):
    prompt = "To be, or not to be"
    engine = engine_for(speculative=speculative)
    full = engine.generate([prompt], SamplingParams(max_tokens=24))[0]
    assert len(full.text) > 12
    stop = full.text[8:11]
    expected = full.text[: full.text.find(stop)]
    got = engine.generate([prompt], SamplingParams(max_tokens=24, stop=(stop, "never-there")))[0]
    assert got.text == expected and got.finish_reason == "stop"
    assert len(got.token_ids) < len(full.token_ids) and full.token_ids[: len(got.token_ids)] == got.token_ids
    assert engine.stats().kv_blocks_used == 0


def test_streamed_text_adds_up_to_the_decoded_tokens(engine_for):
    engine = engine_for()
    engine.add_request("a", "Whether 'tis nobler", SamplingParams(max_tokens=15))
    pieces, ids = [], []
    while engine.has_unfinished():
        for out in engine.step():
            pieces.append(out.new_text)
            ids.extend(out.new_token_ids)
    assert len(pieces) >= 10  # streamed token by token, not at the end
    assert "".join(pieces) == engine.tokenizer.decode(ids, skip_special_tokens=True)


def test_abort_frees_blocks_at_once_and_reports_abort(engine_for, prompts):
    engine = engine_for(max_num_seqs=2)
    for i in range(3):  # the third waits: only two sequences in flight
        engine.add_request(f"r{i}", prompts[i], SamplingParams(max_tokens=30))
    for _ in range(4):
        engine.step()
    before = engine.stats()
    assert before.running == 2 and before.waiting == 1 and before.kv_blocks_used > 0
    held = engine.scheduler.kv.held(engine._by_name["r0"])
    engine.abort("r0")
    engine.abort("r2")  # a waiting one
    engine.abort("nobody")  # unknown ids are a no-op
    assert engine.stats().kv_blocks_used == before.kv_blocks_used - held
    outs = {o.request_id: o for o in engine.step()}
    assert outs["r0"].finished and outs["r0"].finish_reason == "abort"
    assert outs["r2"].finished and outs["r2"].finish_reason == "abort" and outs["r2"].output_tokens == 0
    while engine.has_unfinished():
        engine.step()
    assert engine.stats().kv_blocks_used == 0
    engine.add_request("r0", prompts[0], SamplingParams(max_tokens=2))  # the id is free again


def test_max_tokens_one_finishes_at_prefill(engine_for, prompts):
    out = engine_for().generate([prompts[1]], SamplingParams(max_tokens=1))[0]
    assert len(out.token_ids) == 1 and out.finish_reason == "length"


@pytest.mark.parametrize(
    "prompt, params, match",
    [
        ([], SamplingParams(), "empty"),
        ([5] * 500, SamplingParams(max_tokens=20), "exceeds"),
        ([500], SamplingParams(), r"\[0, 96\)"),
        ([5], SamplingParams(max_tokens=0), "max_tokens"),
        ([5], SamplingParams(temperature=-1.0), "temperature"),
        ([5], SamplingParams(top_p=0.0), "top_p"),
        ([5], SamplingParams(top_k=-2), "top_k"),
        ([5], SamplingParams(stop=("",)), "stop"),
    ],
)
def test_bad_requests_raise_one_line_errors(engine_for, prompt, params, match):
    with pytest.raises(CloudMatrixError, match=match) as e:
        engine_for().add_request("x", prompt, params)
    assert "\n" not in str(e.value)


def test_duplicate_ids_and_requests_larger_than_the_cache_are_refused(engine_for):
    engine = engine_for(kv_cache_tokens=32)
    engine.add_request("x", [5, 6], SamplingParams(max_tokens=4))
    with pytest.raises(CloudMatrixError, match="already running"):
        engine.add_request("x", [5, 6], SamplingParams(max_tokens=4))
    with pytest.raises(CloudMatrixError, match="KV blocks"):
        engine.add_request("y", [5] * 20, SamplingParams(max_tokens=20))
    assert engine.stats().waiting == 1  # the refused one left nothing behind
