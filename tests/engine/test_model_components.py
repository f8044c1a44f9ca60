"""MLA's two paths, the router against transformers', swappable experts backends, the paged cache."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cloudmatrix.engine.kv_cache import PagedLatentCache  # noqa: E402
from cloudmatrix.engine.loader import load_tensors, random_model  # noqa: E402
from cloudmatrix.engine.model.config import ModelConfig  # noqa: E402
from cloudmatrix.engine.model.experts import ExpertWeights, LocalExperts, expert_forward  # noqa: E402


@pytest.fixture(scope="module")
def ours(hf_model):
    return load_tensors(ModelConfig.from_dict(hf_model.config.to_dict()), hf_model.state_dict())


@torch.no_grad()
@pytest.mark.parametrize("query_len", [1, 2, 3])
def test_naive_and_absorbed_mla_agree(ours, query_len):
    """Same cache contents, same queries: up-projected attention == attention in the latent space."""
    attn = ours.layers[1].self_attn
    cache = ours.new_cache(num_blocks=24, block_size=4)
    seqs = [cache.add_sequence() for _ in range(3)]
    g = torch.Generator().manual_seed(0)
    H = ours.config.hidden_size
    # Fill contexts of different lengths (9, 1, 14 tokens), then run query_len new tokens per sequence.
    ctx = cache.plan(seqs, [9, 1, 14])
    x = torch.randn(24, H, generator=g)
    cos, sin = ours.rotary(ctx.positions, x.dtype)
    attn(x, cos, sin, ctx, cache, absorbed=False)
    batch = cache.plan(seqs, [query_len] * 3)
    x = torch.randn(3 * query_len, H, generator=g)
    cos, sin = ours.rotary(batch.positions, x.dtype)
    snapshot = cache.data.clone()
    naive = attn(x, cos, sin, batch, cache, absorbed=False)
    after_naive = cache.data.clone()
    absorbed = attn(x, cos, sin, batch, cache, absorbed=True)
    assert torch.equal(cache.data, after_naive)  # both paths write the same latents
    torch.testing.assert_close(absorbed, naive, atol=1e-5, rtol=1e-5)
    # Only the new tokens' rows changed.
    changed = (cache.data != snapshot).any(dim=-1).nonzero()[:, 1].unique()
    assert set(changed.tolist()) <= set(batch.slots.tolist())


@torch.no_grad()
def test_router_matches_transformers(hf_model, ours):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, ours.config.hidden_size, generator=g)
    for hf_layer, layer in zip(hf_model.model.layers[1:], ours.layers[1:], strict=True):
        _, ref_w, ref_ids = hf_layer.mlp.gate(x)
        ids, w = layer.mlp.gate(x)
        ref_order, order = ref_ids.sort(dim=-1), ids.sort(dim=-1)
        assert torch.equal(order.values, ref_order.values)
        torch.testing.assert_close(w.gather(1, order.indices), ref_w.gather(1, ref_order.indices))
        # Group limit: every token's experts lie in at most topk_group of the n_group groups.
        groups = ids // (ours.config.n_routed_experts // ours.config.n_group)
        assert max(len(set(row)) for row in groups.tolist()) <= ours.config.topk_group


@torch.no_grad()
def test_correction_bias_steers_selection_only(ours):
    gate = ours.layers[1].mlp.gate
    x = torch.randn(32, ours.config.hidden_size, generator=torch.Generator().manual_seed(2))
    ids, w = gate(x)
    scores = torch.sigmoid(x @ gate.weight.T)
    expected = scores.gather(1, ids)
    expected = expected / expected.sum(-1, keepdim=True) * ours.config.routed_scaling_factor
    torch.testing.assert_close(w, expected)  # weights come from the unbiased scores
    old = gate.e_score_correction_bias.clone()
    gate.e_score_correction_bias.fill_(0)
    gate.e_score_correction_bias[3] = 100.0  # a huge bias forces expert 3 into every selection
    try:
        ids, _ = gate(x)
    finally:
        gate.e_score_correction_bias.copy_(old)
    assert (ids == 3).any(dim=-1).all()


class RecordingBackend:
    """An experts backend that records its calls and delegates to another backend."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, hidden, topk_ids, topk_weights):
        self.calls.append((hidden.shape, topk_ids.shape, topk_weights.shape))
        return self.inner(hidden, topk_ids, topk_weights)


@torch.no_grad()
def test_moe_calls_a_replaceable_backend(ours, prompts, forced_logits):
    seq = prompts[0]
    before = forced_logits(ours, [seq], [len(seq)])[0]
    moes = ours.moe_layers()
    originals = [m.experts for m in moes]
    try:
        for m in moes:
            m.experts = RecordingBackend(m.experts)
        after = forced_logits(ours, [seq], [len(seq)])[0]
        k = ours.config.num_experts_per_tok
        for m in moes:
            assert m.experts.calls == [((len(seq), 64), (len(seq), k), (len(seq), k))]
    finally:
        for m, b in zip(moes, originals, strict=True):
            m.experts = b
    torch.testing.assert_close(after, before)


@torch.no_grad()
@pytest.mark.parametrize("tokens", [1, 5, 200])
def test_local_experts_match_per_token_reference(tokens):
    g = torch.Generator().manual_seed(tokens)
    E, H, I, k = 16, 24, 12, 4
    w = ExpertWeights(torch.randn(E, I, H, generator=g), torch.randn(E, I, H, generator=g),
                      torch.randn(E, H, I, generator=g))  # fmt: skip
    x = torch.randn(tokens, H, generator=g)
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(tokens)])
    wt = torch.rand(tokens, k, generator=g)
    ref = torch.stack([
        sum(wt[t, j] * expert_forward(x[t : t + 1], w, int(ids[t, j]))[0] for j in range(k))
        for t in range(tokens)
    ])  # fmt: skip
    torch.testing.assert_close(LocalExperts(w)(x, ids, wt), ref, atol=1e-4, rtol=1e-4)


def test_paged_cache_blocks_and_bytes():
    cfg = ModelConfig.from_dict(dict(
        vocab_size=32, hidden_size=16, intermediate_size=32, moe_intermediate_size=8, num_hidden_layers=2,
        num_attention_heads=2, kv_lora_rank=8, q_lora_rank=None, qk_nope_head_dim=4, qk_rope_head_dim=4,
        v_head_dim=4, n_routed_experts=4, num_experts_per_tok=2, num_nextn_predict_layers=1,
    ))  # fmt: skip
    model = random_model(cfg, seed=0, num_mtp=1)
    cache = model.new_cache(num_blocks=5, block_size=4)
    # Only the latent (8) and the rope key (4) per token and layer (2 main + 1 MTP), float32.
    assert cache.bytes_per_token == 3 * (8 + 4) * 4
    a, b = cache.add_sequence(), cache.add_sequence()
    batch = cache.plan([a, b], [6, 3])
    assert cache.block_table(a) == [0, 1] and cache.block_table(b) == [2]
    assert batch.positions.tolist() == [0, 1, 2, 3, 4, 5, 0, 1, 2]
    assert batch.slots.tolist() == [0, 1, 2, 3, 4, 5, 8, 9, 10]
    batch = cache.plan([b, a], [2, 2])  # b grows into a fresh block 3, a fills block 1
    assert batch.slots.tolist() == [11, 12, 6, 7] and cache.block_table(b) == [2, 3]
    view = batch.decode_view(2)  # b's 2 blocks then a's 2; both hold 2 blocks: one dense chunk each
    assert view.dense and view.blocks.tolist() == [2, 3, 0, 1] and view.chunk_seq.tolist() == [0, 1]
    assert view.visible[0, 0, 0].tolist() == [True] * 4 + [False] * 4  # b's first new token: position 3
    assert view.visible[0, 1, 0].tolist() == [True] * 5 + [False] * 3  # its second: position 4
    cache.set_len(b, 4)  # roll back the last token: block 3 goes back to the pool
    assert cache.block_table(b) == [2] and cache.free_blocks == 2
    cache.free_sequence(a)
    assert cache.free_blocks == 4
    from cloudmatrix.errors import CloudMatrixError

    with pytest.raises(CloudMatrixError, match="out of blocks"):
        cache.plan([b], [40])
    assert isinstance(cache, PagedLatentCache)
