"""The paged latent cache: ragged attention equals the padded computation; plan() is all-or-nothing."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cloudmatrix.engine.kv_cache import AttentionBatch  # noqa: E402
from cloudmatrix.engine.loader import load_tensors  # noqa: E402
from cloudmatrix.engine.model.config import ModelConfig  # noqa: E402
from cloudmatrix.errors import CloudMatrixError  # noqa: E402


@pytest.fixture(scope="module")
def ours(hf_model):
    return load_tensors(ModelConfig.from_dict(hf_model.config.to_dict()), hf_model.state_dict())


def padded_absorbed(attn, cache, batch, q_nope, q_rope):
    """The pre-ragged computation: every sequence's context gathered and padded to the longest, masked."""
    w_uk, w_uv_t = attn.absorbed_weights()
    B, q_len, h, bs = batch.num_seqs, batch.query_lens[0], attn.num_heads, cache.block_size
    L = max(batch.total_lens)
    rows = torch.zeros(B, L, dtype=torch.long)
    for b, t in enumerate(batch.tables):
        r = (torch.tensor(t)[:, None] * bs + torch.arange(bs)).reshape(-1)[: batch.total_lens[b]]
        rows[b, : r.numel()] = r
    kv = cache.data[attn.layer_id][rows]  # [B, L, w]
    q_lat = torch.bmm(q_nope.transpose(0, 1), w_uk).transpose(0, 1)
    q = torch.cat([q_lat, q_rope], dim=-1).reshape(B, q_len * h, -1)
    scores = torch.bmm(q, kv.transpose(1, 2)).view(B, q_len, h, L) * attn.scale
    ctx = torch.tensor(batch.context_lens)[:, None, None, None]
    mask = torch.arange(L)[None, None, None, :] <= ctx + torch.arange(q_len)[None, :, None, None]
    p = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    o_lat = torch.bmm(p.view(B, q_len * h, L), kv[..., : attn.r])
    o = torch.bmm(o_lat.view(B * q_len, h, attn.r).transpose(0, 1), w_uv_t)
    return o.transpose(0, 1).reshape(B * q_len, -1)


@torch.no_grad()
@pytest.mark.parametrize("query_len", [1, 2])
@pytest.mark.parametrize("fill", [[3, 1, 57, 8], [4, 5, 6, 5]], ids=["ragged", "same-blocks"])
def test_ragged_absorbed_attention_matches_the_padded_path(ours, query_len, fill):
    """One long sequence among short ones, contexts ending anywhere in a block (even leaving the last
    block empty for the first new token): the chunked split softmax equals the padded softmax; and
    sequences holding the same number of blocks take the dense path, which must agree too."""
    attn = ours.layers[1].self_attn
    cache = ours.new_cache(num_blocks=40, block_size=4)
    seqs = [cache.add_sequence() for _ in range(4)]
    g = torch.Generator().manual_seed(0)
    H = ours.config.hidden_size
    ctx = cache.plan(seqs, fill)
    x = torch.randn(sum(fill), H, generator=g)
    attn(x, *ours.rotary(ctx.positions, x.dtype), ctx, cache, absorbed=False)
    batch = cache.plan(seqs, [query_len] * 4)
    x = torch.randn(4 * query_len, H, generator=g)
    cos, sin = ours.rotary(batch.positions, x.dtype)
    q_nope, q_rope, latent = attn.project(x, cos, sin)
    cache.write(attn.layer_id, batch, latent)
    ragged = attn.attend_absorbed(q_nope, q_rope, cache, batch, 4)
    torch.testing.assert_close(ragged, padded_absorbed(attn, cache, batch, q_nope, q_rope), atol=1e-5, rtol=1e-5)
    view = batch.decode_view(4)
    used = [-(-(f + query_len) // 4) for f in fill]
    assert view.dense == (len(set(used)) == 1)
    chunk = 1 if view.dense else 16  # dense: exactly the blocks in use; else chunks of 16 blocks of 4
    assert view.blocks.numel() == sum(-(-u // chunk) * chunk for u in used)


@torch.no_grad()
def test_a_mixed_pass_equals_its_decode_and_prefill_parts_run_apart(ours):
    """Decode sequences (absorbed) and a prefill chunk with cached context (naive) in one forward pass."""
    prompt = torch.randint(0, 96, (30,), generator=torch.Generator().manual_seed(1)).tolist()

    def run(split: bool):
        cache = ours.new_cache(num_blocks=40, block_size=4)
        seqs = [cache.add_sequence() for _ in range(3)]
        first = cache.plan(seqs, [9, 14, 10])
        ours(torch.tensor(prompt[:9] + prompt[:14] + prompt[:10]), first, cache)
        for s, n in zip(seqs, [10, 15, 18], strict=True):  # room for one decode token each and an 8-token chunk
            cache.blocks.allocate(s, n)
        tables = [cache.block_table(s) for s in seqs]
        tokens = [prompt[9], prompt[14], *prompt[10:18]]
        if not split:
            b = AttentionBatch.build(seqs, tables, [9, 14, 10], [1, 1, 8], 4, num_decode=2)
            return ours(torch.tensor(tokens), b, cache)
        dec = AttentionBatch.build(seqs[:2], tables[:2], [9, 14], [1, 1], 4)
        pre = AttentionBatch.build(seqs[2:], tables[2:], [10], [8], 4)
        return torch.cat([ours(torch.tensor(tokens[:2]), dec, cache), ours(torch.tensor(tokens[2:]), pre, cache)])

    torch.testing.assert_close(run(split=False), run(split=True), atol=1e-5, rtol=1e-5)


def test_plan_is_all_or_nothing(ours):
    cache = ours.new_cache(num_blocks=4, block_size=4)
    x, y = cache.add_sequence(), cache.add_sequence()
    with pytest.raises(CloudMatrixError, match="out of blocks"):
        cache.plan([x, y], [8, 12])  # 2 + 3 blocks of 4: x alone would fit
    assert cache.free_blocks == 4 and cache.block_table(x) == [] and cache.seq_len(x) == 0
    cache.plan([x], [8])
    assert cache.block_table(x) == [0, 1] and cache.free_blocks == 2
