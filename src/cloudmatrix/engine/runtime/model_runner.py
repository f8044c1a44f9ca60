"""The worker: runs one scheduled step (decode slots + prefill chunks) through the model.

One forward pass takes every token of the step packed back to back: first the decoding
sequences (the last output token plus its MTP draft, absorbed attention), then the prefill chunks
(naive attention). Logits are computed only where a token is chosen: every decode position and the
last prompt token of a finished prompt. With MTP (depth 1, DeepSeek-V3's layout):

- verification: a decoding sequence at position p runs [t, d] (d: the draft for p + 1). The
  request's sampler picks s0 at p and s1 at p + 1; d is accepted iff s0 == d, giving s0 and s1,
  else s0 only. For greedy rows the output is exactly plain greedy decoding; for sampled rows it is
  exactly the request's distribution (the draft is a point mass: accepting it iff the target's own
  draw equals it is rejection sampling). The rejected draft's latent is simply overwritten next
  step: the sequence's length, not its blocks, says what is valid.
- drafting: the MTP module runs over the same positions, fed the token after each (prompt tokens,
  sampled tokens), writes its own cache layer and drafts the next step's token from the last
  accepted position.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cloudmatrix.engine.kv_cache import ABSORBED_MAX_QUERY, AttentionBatch, PagedLatentCache
from cloudmatrix.engine.model.model import DeepseekV3
from cloudmatrix.engine.runtime.sampling import RowSampler, sample
from cloudmatrix.serving.instance_scheduler import StepBatch
from cloudmatrix.serving.request import Request


class ModelRunner:
    def __init__(self, model: DeepseekV3, cache: PagedLatentCache, speculative: bool):
        self.model = model
        self.cache = cache
        self.depth = 1 if speculative else 0
        self.device = cache.device
        self.forward_passes = 0
        self.drafted = 0
        self.accepted = 0

    @torch.inference_mode()
    def execute(
        self, batch: StepBatch, sampler_of: Callable[[Request], RowSampler]
    ) -> tuple[list[list[int]], list[int | None]]:
        """(per decode request the accepted tokens, per prefill request its first token or None)."""
        dec, pre = batch.decode, batch.prefill
        q = 1 + self.depth
        ids: list[int] = []
        for r in dec:
            ids.append(r.output[-1])
            ids.extend(r.draft)
        for r, s, e in zip(pre, batch.starts, batch.ends, strict=True):
            ids.extend(r.prompt[s:e])
        reqs = dec + pre
        blocks = self.cache.blocks
        attn = AttentionBatch.build(
            [r.id for r in reqs],
            [blocks.table(r.id) for r in reqs],
            [r.kv_tokens for r in dec] + list(batch.starts),
            [q] * len(dec) + [e - s for s, e in zip(batch.starts, batch.ends, strict=True)],
            self.cache.block_size,
            num_decode=len(dec) if q <= ABSORBED_MAX_QUERY else 0,
            device=self.device,
        )
        hidden = self.model(torch.tensor(ids, dtype=torch.long, device=self.device), attn, self.cache)
        self.forward_passes += 1

        # rows whose logits choose a token: all decode positions, then each finished prompt's last token
        n_dec_tok = q * len(dec)
        ends = torch.tensor(attn.query_lens, dtype=torch.long).cumsum(0) - 1
        done = [k for k in range(len(pre)) if batch.finishing(k)]
        rows = list(range(n_dec_tok)) + [int(ends[len(dec) + k]) for k in done]
        samplers = [sampler_of(r) for r in dec for _ in range(q)] + [sampler_of(pre[k]) for k in done]
        picked = sample(self.model.logits(hidden[rows]), samplers) if rows else []

        decode_tokens: list[list[int]] = []
        accepted: list[bool] = []
        for i, r in enumerate(dec):
            s = picked[i * q : (i + 1) * q]
            ok = self.depth > 0 and s[0] == r.draft[0]
            accepted.append(ok)
            decode_tokens.append(s if ok else s[:1])
        first = dict(zip(done, picked[n_dec_tok:], strict=True))
        prefill_tokens = [first.get(k) for k in range(len(pre))]
        if self.depth:
            self.drafted += len(dec)
            self.accepted += sum(accepted)
            self._draft(attn, hidden, dec, pre, batch, picked, accepted, prefill_tokens, done, ends)
        return decode_tokens, prefill_tokens

    def _draft(self, attn, hidden, dec, pre, batch, picked, accepted, prefill_tokens, done, ends) -> None:
        """Run the MTP module over the step's positions and store each sequence's next draft."""
        nxt: list[int] = []
        for i in range(len(dec)):
            nxt.extend(picked[2 * i : 2 * i + 2])  # the token after p is s0, after p + 1 is s1
        for k, (r, s, e) in enumerate(zip(pre, batch.starts, batch.ends, strict=True)):
            nxt.extend(r.prompt[s + 1 : e])
            nxt.append(prefill_tokens[k] if batch.finishing(k) else r.prompt[e])
        # the draft comes from p + 1 when the draft was accepted, else from p; a prompt's from its last token
        rows = [2 * i + int(ok) for i, ok in enumerate(accepted)] + [int(ends[len(dec) + k]) for k in done]
        _, logits = self.model.forward_mtp(
            0, torch.tensor(nxt, device=self.device), hidden, attn, self.cache,
            rows=torch.tensor(rows, dtype=torch.long, device=self.device),
        )  # fmt: skip
        drafts = logits.argmax(dim=-1).tolist() if rows else []
        for r, d in zip(dec + [pre[k] for k in done], drafts, strict=True):
            r.draft = [d]
