"""The packaged default model (src/cloudmatrix/engine/default_model, made by scripts/train_default_model.py):
it is complete, loads in our loader and in transformers with the same logits, predicts Shakespeare far
better than chance, and greedy generation is deterministic text."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

import cloudmatrix.engine  # noqa: E402
from cloudmatrix.engine.loader import load_model  # noqa: E402

FOLDER = Path(cloudmatrix.engine.__file__).parent / "default_model"
# Sonnet 18 (public domain); the training text includes the sonnets, so this measures fit, not generalisation.
SONNET = (
    "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
    "Rough winds do shake the darling buds of May,\nAnd summer's lease hath all too short a date:\n"
)
PROMPT = "ROMEO.\nBut soft, what light through yonder window breaks?\n"


@pytest.fixture(scope="module")
def tokenizer():
    return tokenizers.Tokenizer.from_file(str(FOLDER / "tokenizer.json"))


@pytest.fixture(scope="module")
def ours():
    return load_model(FOLDER)


@pytest.fixture(scope="module")
def hf():
    from transformers import DeepseekV3ForCausalLM
    from transformers.utils import logging

    logging.set_verbosity_error()  # it lists the MTP tensors it has no module for; that is expected
    return DeepseekV3ForCausalLM.from_pretrained(FOLDER, dtype=torch.float32, attn_implementation="eager").eval()


def test_folder_is_complete_and_attributed():
    cfg = json.loads((FOLDER / "config.json").read_text())
    assert cfg["model_type"] == "deepseek_v3" and cfg["num_nextn_predict_layers"] == 1
    assert 16 <= cfg["n_routed_experts"] <= 32 and cfg["n_shared_experts"] == 1 and cfg["first_k_dense_replace"] == 1
    tok_cfg = json.loads((FOLDER / "tokenizer_config.json").read_text())
    assert "{%" in tok_cfg["chat_template"]
    gen = json.loads((FOLDER / "generation_config.json").read_text())
    tok = tokenizers.Tokenizer.from_file(str(FOLDER / "tokenizer.json"))
    assert gen["eos_token_id"] == cfg["eos_token_id"] == tok.token_to_id(tok_cfg["eos_token"])
    notice = (FOLDER / "NOTICE").read_text()
    assert "public domain" in notice and "Creative Commons Attribution 2.5" in notice
    assert (FOLDER / "model.safetensors").stat().st_size < 25e6  # it ships inside the wheel


def test_parameter_count_and_mtp_weights(ours):
    n = sum(p.numel() for p in ours.parameters()) + sum(b.numel() for b in ours.buffers())
    assert 8e6 <= n <= 30e6
    assert len(ours.mtp) == 1


def test_logits_match_transformers(ours, hf, tokenizer, forced_logits):
    ids = tokenizer.encode(PROMPT).ids
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0]
    got = forced_logits(ours, [ids], [len(ids) - 4])[0]  # prefill, then 4 decode steps on the paged cache
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() < 1e-4 * ref.abs().max().item() + 1e-5


def test_predicts_shakespeare_far_better_than_chance(hf, tokenizer):
    ids = tokenizer.encode(SONNET).ids
    with torch.no_grad():
        logits = hf(torch.tensor([ids])).logits[0, :-1]
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:])).item()
    chance = math.log(tokenizer.get_vocab_size())
    assert nll < 0.6 * chance, f"per-token loss {nll:.2f} nats vs {chance:.2f} for a uniform guess"


def test_greedy_generation_is_deterministic_text(hf, tokenizer):
    ids = torch.tensor([tokenizer.encode(PROMPT).ids])
    runs = [hf.generate(ids, max_new_tokens=40, do_sample=False)[0, ids.shape[1] :].tolist() for _ in range(2)]
    assert runs[0] == runs[1]
    text = tokenizer.decode(runs[0])
    assert len(text.split()) >= 8
    assert all(c.isprintable() or c == "\n" for c in text)
    visible = [c for c in text if not c.isspace()]
    assert sum(c.isalpha() for c in visible) > 0.6 * len(visible)


def test_engine_greedy_equals_transformers_and_mtp_drafts_get_accepted(hf, tokenizer):
    runtime = pytest.importorskip("cloudmatrix.engine.runtime.engine")
    from cloudmatrix.engine.runtime.params import EngineConfig, SamplingParams

    engine = runtime.LLMEngine(config=EngineConfig(speculative=True, kv_cache_tokens=2048))
    prompts = [PROMPT, "KING.\nWhat news, my lord?\n"]
    done = engine.generate(prompts, SamplingParams(max_tokens=32, ignore_eos=True))
    for prompt, c in zip(prompts, done, strict=True):
        ids = torch.tensor([tokenizer.encode(prompt).ids])
        ref = hf.generate(ids, max_new_tokens=32, do_sample=False)[0, ids.shape[1] :].tolist()
        assert c.token_ids == ref
    stats = engine.stats()
    assert stats.mtp_drafted > 0 and stats.mtp_acceptance > 0.3
