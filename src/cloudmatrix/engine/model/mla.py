"""Multi-head Latent Attention (MLA) with two execution paths.

Per token x, with h heads:
    q = W_UQ norm(W_DQ x)                      (or W_Q x when q_lora_rank is None)
    q = [q_nope (dn) | q_rope (dr)] per head;  q_rope gets RoPE
    [c | k_r] = W_DKV x;  c = norm(c) (kv_lora_rank r);  k_r gets RoPE, one key shared by all heads
    [k_nope | v] = W_UKV c per head            (W_UK: [h, dn, r], W_UV: [h, dv, r])
    score_hj = (q_nope_h . k_nope_hj + q_rope_h . k_r_j) * scale
    o_h = sum_j softmax_j(score) v_hj;  out = W_O [o_1 .. o_h]

The cache holds only [c | k_r] per token (see kv_cache.py).

naive (prefill): up-project every cached c to per-head k_nope and v, then standard attention.
absorbed (decode): since q_nope_h . (W_UK_h c_j) = (W_UK_h^T q_nope_h) . c_j and
    sum_j p_hj (W_UV_h c_j) = W_UV_h (sum_j p_hj c_j),
fold W_UK into the query (q_lat_h = W_UK_h^T q_nope_h, width r) and W_UV into the output; attention
then runs over the r + dr wide latent directly, one shared "key/value" for all heads, and nothing
per head is materialised per cached token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cloudmatrix.engine.kv_cache import AttentionBatch, PagedLatentCache
from cloudmatrix.engine.model.config import ModelConfig
from cloudmatrix.engine.model.norm import RMSNorm
from cloudmatrix.engine.model.rope import apply_rope, softmax_scale


class MLAttention(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int):
        super().__init__()
        c = config
        self.layer_id = layer_id  # index of this layer's slice of the KV cache
        self.num_heads = c.num_attention_heads
        self.dn, self.dr, self.dv = c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim
        self.r = c.kv_lora_rank
        self.interleave = c.rope_interleave
        self.scale = softmax_scale(c)
        qk = self.num_heads * c.qk_head_dim
        if c.q_lora_rank is None:
            self.q_proj = nn.Linear(c.hidden_size, qk, bias=False)
        else:
            self.q_a_proj = nn.Linear(c.hidden_size, c.q_lora_rank, bias=c.attention_bias)
            self.q_a_layernorm = RMSNorm(c.q_lora_rank)
            self.q_b_proj = nn.Linear(c.q_lora_rank, qk, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(c.hidden_size, self.r + self.dr, bias=c.attention_bias)
        self.kv_a_layernorm = RMSNorm(self.r)
        self.kv_b_proj = nn.Linear(self.r, self.num_heads * (self.dn + self.dv), bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.dv, c.hidden_size, bias=c.attention_bias)
        self._absorbed: tuple[tuple[int, int], torch.Tensor, torch.Tensor] | None = None

    # -- shared projections ----------------------------------------------------------------------
    def project(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q_nope [T, h, dn], q_rope [T, h, dr] and the cacheable latent [T, r + dr] of tokens x [T, H]."""
        T = x.shape[0]
        # q_lora_rank None: one full-rank projection; else down-project, normalise, up-project.
        full_rank = hasattr(self, "q_proj")
        q = self.q_proj(x) if full_rank else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(T, self.num_heads, self.dn + self.dr)
        q_nope, q_rope = q.split([self.dn, self.dr], dim=-1)
        q_rope = apply_rope(q_rope, cos[:, None, :], sin[:, None, :], self.interleave)
        c, k_rope = self.kv_a_proj_with_mqa(x).split([self.r, self.dr], dim=-1)
        latent = torch.cat([self.kv_a_layernorm(c), apply_rope(k_rope, cos, sin, self.interleave)], dim=-1)
        return q_nope, q_rope, latent

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        batch: AttentionBatch,
        cache: PagedLatentCache,
        absorbed: bool | None = None,
    ) -> torch.Tensor:
        """absorbed: None -> the batch's first `num_decode` sequences absorbed, the rest naive;
        True / False -> every sequence on that path."""
        q_nope, q_rope, latent = self.project(x, cos, sin)
        cache.write(self.layer_id, batch, latent)
        n_dec = batch.num_decode if absorbed is None else (batch.num_seqs if absorbed else 0)
        split = batch.decode_tokens(n_dec)
        outs = []
        if n_dec:
            outs.append(self.attend_absorbed(q_nope[:split], q_rope[:split], cache, batch, n_dec))
        if n_dec < batch.num_seqs:
            outs.append(self.attend_naive(q_nope[split:], q_rope[split:], latent[split:], cache, batch, n_dec))
        return self.o_proj(outs[0] if len(outs) == 1 else torch.cat(outs))

    # -- naive path (prefill) --------------------------------------------------------------------
    def attend_naive(
        self,
        q_nope: torch.Tensor,
        q_rope: torch.Tensor,
        latent: torch.Tensor,
        cache: PagedLatentCache,
        batch: AttentionBatch,
        first: int = 0,
    ) -> torch.Tensor:
        """Sequences `first`.. of the batch: up-project each one's latents to per-head keys/values and
        run causal attention over exactly its own context (no padding to the batch's longest)."""
        h, outs, start = self.num_heads, [], 0
        fresh_ok = cache.data.dtype == latent.dtype
        for b in range(first, batch.num_seqs):
            ctx, n = batch.context_lens[b], batch.query_lens[b]
            L = ctx + n
            if ctx == 0 and fresh_ok:  # nothing cached before: the latents just computed are the context
                kv = latent[start : start + n]
            else:
                kv = cache.gather_rows(self.layer_id, batch.rows(b)).to(q_nope.dtype)
            c, k_rope = kv.split([self.r, self.dr], dim=-1)
            k_nope, v = self.kv_b_proj(c).view(L, h, self.dn + self.dv).split([self.dn, self.dv], dim=-1)
            k = torch.cat([k_nope, k_rope[:, None, :].expand(L, h, self.dr)], dim=-1)
            q = torch.cat([q_nope[start : start + n], q_rope[start : start + n]], dim=-1)
            # New token i sits at position ctx + i and sees keys 0..ctx + i.
            dev = kv.device
            mask = torch.arange(L, device=dev)[None, :] <= ctx + torch.arange(n, device=dev)[:, None]
            o = F.scaled_dot_product_attention(
                q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask, scale=self.scale
            )
            outs.append(o.transpose(0, 1).reshape(n, h * self.dv))
            start += n
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    # -- absorbed path (decode) ------------------------------------------------------------------
    def absorbed_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W_UK [h, dn, r] and W_UV^T [h, r, dv] from kv_b_proj, rebuilt if the weight changes."""
        w = self.kv_b_proj.weight
        key = (w.data_ptr(), w._version)
        if self._absorbed is None or self._absorbed[0] != key:
            per_head = w.detach().view(self.num_heads, self.dn + self.dv, self.r)
            w_uk, w_uv = per_head.split([self.dn, self.dv], dim=1)
            self._absorbed = (key, w_uk.contiguous(), w_uv.transpose(1, 2).contiguous())
        return self._absorbed[1], self._absorbed[2]

    def attend_absorbed(
        self, q_nope: torch.Tensor, q_rope: torch.Tensor, cache: PagedLatentCache, batch: AttentionBatch, n: int
    ) -> torch.Tensor:
        """Attention in the latent space for the batch's first n sequences (q new tokens each).

        Ragged and paged: attention reads only the blocks each sequence owns. When every sequence
        holds the same number of blocks, those form one [n, blocks * bs] layout and a plain masked
        softmax runs. Otherwise keys are scored in chunks of whole blocks (ATTENTION_CHUNK_TOKENS),
        every chunk of the batch in one batched matmul; the softmax is taken against each sequence's
        own maximum (one scatter over the chunk maxima) and the chunks' weighted sums are added per
        sequence (split softmax, as in flash-decoding), so a long sequence in the batch costs its own
        length, not the batch's width times it.
        """
        w_uk, w_uv_t = self.absorbed_weights()
        view = batch.decode_view(n)
        T, h, q_len = q_nope.shape[0], self.num_heads, view.q
        w = self.r + self.dr
        # q_lat_h = W_UK_h^T q_nope_h: [h, T, dn] @ [h, dn, r] -> [h, T, r]
        q_lat = torch.bmm(q_nope.transpose(0, 1), w_uk)
        # One matmul scores both parts: [q_lat | q_rope] . [c | k_rope]; the scale goes on the queries.
        q = (torch.cat([q_lat.transpose(0, 1), q_rope], dim=-1) * self.scale).reshape(n, q_len * h, w)
        kv = cache.gather_blocks(self.layer_id, view.blocks).to(q.dtype)  # [NC * C, bs, w]
        kv = kv.view(view.chunk_seq.numel(), -1, w)  # [NC, K, w] with K = C * bs keys per chunk
        NC, K = kv.shape[0], kv.shape[1]
        if view.dense:  # one chunk per sequence: a plain masked softmax, nothing to merge
            scores = torch.bmm(q, kv.transpose(1, 2)).view(n, q_len, h, K).masked_fill_(~view.visible, float("-inf"))
            p = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
            o_lat = torch.bmm(p.view(n, q_len * h, K), kv[..., : self.r])
            o = torch.bmm(o_lat.view(T, h, self.r).transpose(0, 1), w_uv_t)
            return o.transpose(0, 1).reshape(T, h * self.dv)
        scores = torch.bmm(q.index_select(0, view.chunk_seq), kv.transpose(1, 2)).view(NC, q_len, h, K)
        scores = scores.float().masked_fill_(~view.visible, float("-inf"))
        m = scores.amax(dim=-1)  # [NC, q, h]; -inf where a chunk holds nothing visible to that token
        owner = view.chunk_seq[:, None, None].expand_as(m)
        seq_max = torch.full((n, q_len, h), float("-inf"), device=m.device).scatter_reduce_(0, owner, m, "amax")
        # weights relative to the sequence's max: e^(s - M) = e^(s - m) e^(m - M); empty chunks give 0
        p = torch.exp(scores - seq_max.index_select(0, view.chunk_seq)[..., None])
        den = torch.zeros(n, q_len, h, device=m.device).index_add_(0, view.chunk_seq, p.sum(-1))
        o_chunk = torch.bmm(p.view(NC, q_len * h, K).to(q.dtype), kv[..., : self.r])  # [NC, q*h, r]
        num = torch.zeros(n, q_len * h, self.r, dtype=o_chunk.dtype, device=m.device)
        o_lat = num.index_add_(0, view.chunk_seq, o_chunk) / den.view(n, q_len * h, 1).to(num.dtype)
        # o_h = W_UV_h o_lat_h: [h, T, r] @ [h, r, dv] -> [h, T, dv]
        o = torch.bmm(o_lat.view(T, h, self.r).transpose(0, 1), w_uv_t)
        return o.transpose(0, 1).reshape(T, h * self.dv)
