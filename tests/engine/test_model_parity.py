"""Our DeepSeek-V3 against transformers' DeepseekV3ForCausalLM on tiny random checkpoints."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cloudmatrix.engine.generate import greedy_generate  # noqa: E402
from cloudmatrix.engine.loader import load_model  # noqa: E402

ATOL = 1e-4


@pytest.fixture(scope="module")
def ours(hf_dir):
    return load_model(hf_dir)


@torch.no_grad()
def hf_incremental_logits(hf, seq: list[int], prompt_len: int) -> torch.Tensor:
    """transformers: prefill the prompt, then one token at a time through its own KV cache."""
    out = hf(torch.tensor([seq[:prompt_len]]), use_cache=True)
    logits, past = [out.logits[0]], out.past_key_values
    for t in seq[prompt_len:]:
        out = hf(torch.tensor([[t]]), past_key_values=past, use_cache=True)
        logits.append(out.logits[0])
        past = out.past_key_values
    return torch.cat(logits)


def test_prefill_and_decode_logits_match_transformers(hf_model, ours, prompts, forced_logits):
    # Continue each prompt with 12 arbitrary tokens: prefill covers the prompt, decode the rest.
    g = torch.Generator().manual_seed(3)
    seqs = [p + torch.randint(0, 96, (12,), generator=g).tolist() for p in prompts]
    got = forced_logits(ours, seqs, [len(p) for p in prompts])
    for seq, p, logits in zip(seqs, prompts, got, strict=True):
        ref = hf_incremental_logits(hf_model, seq, len(p))
        assert logits.shape == ref.shape
        torch.testing.assert_close(logits, ref, atol=ATOL, rtol=0)
        full = hf_model(torch.tensor([seq])).logits[0]  # and the whole sequence in one causal pass
        torch.testing.assert_close(logits, full, atol=ATOL, rtol=0)


def test_greedy_generation_matches_transformers_batched(hf_model, ours, prompts):
    """32 greedy steps, batch of 3 prompts of lengths 7, 3 and 18 (transformers: left padding)."""
    L = max(map(len, prompts))
    ids = torch.tensor([[0] * (L - len(p)) + p for p in prompts])
    mask = torch.arange(L)[None] >= torch.tensor([L - len(p) for p in prompts])[:, None]
    ref = hf_model.generate(
        input_ids=ids, attention_mask=mask.long(), max_new_tokens=32, do_sample=False,
        pad_token_id=0, eos_token_id=None,
    )[:, L:].tolist()  # fmt: skip
    got = greedy_generate(ours, prompts, max_new_tokens=32, block_size=16)
    assert got.tokens == ref
    assert got.forward_passes == 31
    assert len(set(map(tuple, ref))) == 3  # the three continuations differ: the test can tell them apart


def test_sharded_checkpoint_loads_identically(hf_model, ours, tmp_path):
    hf_model.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert len(list(tmp_path.glob("*.safetensors"))) > 3
    sharded = load_model(tmp_path)
    a = dict(ours.named_parameters())
    for name, p in sharded.named_parameters():
        assert torch.equal(p, a[name]), name
    for la, lb in zip(ours.moe_layers(), sharded.moe_layers(), strict=True):
        assert torch.equal(la.experts.weights.down, lb.experts.weights.down)
        assert torch.equal(la.experts.weights.gate, lb.experts.weights.gate)


@pytest.mark.parametrize(
    "overrides",
    [
        # full-rank q, plain RoPE without interleave, one expert group, unnormalised top-k weights
        dict(q_lora_rank=None, rope_scaling=None, rope_interleave=False, n_group=1, topk_group=1,
             norm_topk_prob=False, first_k_dense_replace=2, n_shared_experts=2),
        # YaRN with mscale != mscale_all_dim (attention factor != 1), biased projections
        dict(rope_scaling={"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 64,
                           "mscale": 0.707, "mscale_all_dim": 1.0, "beta_fast": 32, "beta_slow": 1},
             attention_bias=True),
    ],
)  # fmt: skip
def test_config_variants_match_transformers(overrides, tmp_path, make_hf, forced_logits, prompts):
    hf = make_hf(seed=11, **overrides)
    hf.save_pretrained(tmp_path)
    ours = load_model(tmp_path)
    seq = prompts[2] + [3, 1, 4, 1, 5, 9, 2, 6]
    got = forced_logits(ours, [seq], [len(prompts[2])])[0]
    torch.testing.assert_close(got, hf(torch.tensor([seq])).logits[0].detach(), atol=ATOL, rtol=0)
