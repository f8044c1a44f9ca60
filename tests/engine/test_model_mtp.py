"""MTP speculative decoding produces exactly the plain greedy tokens."""

from __future__ import annotations

import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cloudmatrix.engine.generate import greedy_generate, mtp_generate  # noqa: E402
from cloudmatrix.engine.loader import load_model  # noqa: E402


@pytest.fixture(scope="module")
def mtp_model(hf_dir, tmp_path_factory, with_mtp):
    folder = tmp_path_factory.mktemp("dsv3_mtp")
    shutil.copytree(hf_dir, folder, dirs_exist_ok=True)
    with_mtp(folder)
    return load_model(folder, mtp=True)


def test_mtp_weights_load_from_layer_after_the_last(mtp_model):
    assert len(mtp_model.mtp) == 1 and mtp_model.num_cache_layers == 4
    assert mtp_model.mtp[0].eh_proj.weight.shape == (64, 128)


def test_mtp_speculative_equals_greedy(mtp_model, prompts):
    greedy = greedy_generate(mtp_model, prompts, max_new_tokens=32)
    spec = mtp_generate(mtp_model, prompts, max_new_tokens=32)
    assert spec.tokens == greedy.tokens
    assert spec.drafted > 0 and 0.0 <= spec.acceptance_rate <= 1.0


def test_mtp_with_an_oracle_draft_accepts_and_rejects(mtp_model, prompts, monkeypatch):
    """Drafts forced right 2 times in 3 (and wrong otherwise) exercise acceptance, rejection and
    cache roll-back; the output must still be exactly greedy and the passes fewer."""
    greedy = greedy_generate(mtp_model, prompts, max_new_tokens=32)
    full = [p + g for p, g in zip(prompts, greedy.tokens, strict=True)]
    real = mtp_model.forward_mtp

    def oracle(depth, next_ids, prev_hidden, batch, cache, absorbed=None, rows=None):
        h, logits = real(depth, next_ids, prev_hidden, batch, cache, absorbed)
        logits = torch.zeros_like(logits)
        seq_of = torch.repeat_interleave(torch.tensor(batch.seq_ids), torch.tensor(batch.query_lens))
        for row, (s, pos) in enumerate(zip(seq_of.tolist(), batch.positions.tolist(), strict=True)):
            target = full[s][pos + 2] if pos + 2 < len(full[s]) else 0
            logits[row, target if pos % 3 else (target + 1) % logits.shape[1]] = 1.0
        return h, (logits if rows is None else logits[rows])

    monkeypatch.setattr(mtp_model, "forward_mtp", oracle)
    spec = mtp_generate(mtp_model, prompts, max_new_tokens=32)
    assert spec.tokens == greedy.tokens
    assert 0.4 < spec.acceptance_rate < 0.9
    assert spec.forward_passes < greedy.forward_passes


def test_eos_stops_each_sequence(mtp_model, prompts):
    greedy = greedy_generate(mtp_model, prompts, max_new_tokens=20)
    eos = greedy.tokens[0][5]  # stop the first sequence at its sixth token
    cut = greedy_generate(mtp_model, prompts, max_new_tokens=20, eos_token_id=eos)
    spec = mtp_generate(mtp_model, prompts, max_new_tokens=20, eos_token_id=eos)
    for full, got in zip(greedy.tokens, cut.tokens, strict=True):
        n = full.index(eos) + 1 if eos in full else len(full)
        assert got == full[:n]
    assert cut.tokens[0] == greedy.tokens[0][: greedy.tokens[0].index(eos) + 1]
    assert spec.tokens == cut.tokens
