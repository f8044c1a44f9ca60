"""Greedy batched generation: packed prefill (naive MLA), then decode steps (absorbed MLA) on the
paged latent cache; and the same with MTP speculative decoding (one draft token per step).

Speculative step for a sequence whose last token t sits at position p (cache valid up to p - 1),
with draft d for p + 1 from the MTP module:
1. the main model runs [t, d] at positions p, p + 1 -> greedy g0 (for p + 1) and g1 (for p + 2);
2. d == g0: accept, emit d and g1 (two tokens for one main pass); otherwise emit g0 only and roll the
   cache back to p, discarding d's latent;
3. the MTP module runs at p, p + 1 on (hidden_p, g0), (hidden_p+1, g1) and drafts from p + 1 if
   accepted, else from p.
The emitted tokens are exactly the plain greedy ones: every emitted token is the main model's argmax
given the tokens before it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from cloudmatrix.engine.kv_cache import PagedLatentCache
from cloudmatrix.engine.model.model import DeepseekV3
from cloudmatrix.errors import CloudMatrixError


@dataclass
class GenerationResult:
    tokens: list[list[int]]  # generated tokens per prompt (without the prompt)
    forward_passes: int = 0  # main-model decode passes after prefill
    drafted: int = 0  # MTP draft tokens proposed
    accepted: int = 0  # of which the main model confirmed
    per_step_batch: list[int] = field(default_factory=list, repr=False)
    # time.perf_counter() when each step's tokens were known: [0] after prefill, then one per decode pass
    token_times: list[float] = field(default_factory=list, repr=False)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


def _new_cache(model: DeepseekV3, prompts: list[list[int]], max_new: int, block_size: int) -> PagedLatentCache:
    if not prompts or any(len(p) == 0 for p in prompts):
        raise CloudMatrixError("every prompt needs at least one token")
    blocks = sum(-(-(len(p) + max_new + 2) // block_size) for p in prompts)
    return model.new_cache(num_blocks=blocks, block_size=block_size)


def _argmax(model: DeepseekV3, hidden: torch.Tensor) -> torch.Tensor:
    return model.logits(hidden).argmax(dim=-1)


@torch.inference_mode()
def greedy_generate(
    model: DeepseekV3,
    prompts: list[list[int]],
    max_new_tokens: int,
    eos_token_id: int | None = None,
    block_size: int = 16,
) -> GenerationResult:
    """Greedy decoding of a batch of prompts of any lengths; stops a sequence at eos or max_new_tokens."""
    cache = _new_cache(model, prompts, max_new_tokens, block_size)
    seqs = [cache.add_sequence() for _ in prompts]
    out: list[list[int]] = [[] for _ in prompts]
    result = GenerationResult(out)
    if max_new_tokens <= 0:
        return result

    batch = cache.plan(seqs, [len(p) for p in prompts])
    dev = cache.data.device
    hidden = model(torch.tensor([t for p in prompts for t in p], device=dev), batch, cache)
    last = torch.tensor([len(p) for p in prompts], device=dev).cumsum(0) - 1
    nxt = _argmax(model, hidden[last])
    result.token_times.append(time.perf_counter())
    active = list(range(len(prompts)))
    while True:
        still: list[int] = []
        for i, tok in zip(active, nxt.tolist(), strict=True):
            out[i].append(tok)
            if tok != eos_token_id and len(out[i]) < max_new_tokens:
                still.append(i)
        if not still:
            break
        if len(still) != len(active):
            alive = set(still)
            keep = torch.tensor([k for k, i in enumerate(active) if i in alive], device=dev)
            nxt = nxt[keep]
        active = still
        batch = cache.plan([seqs[i] for i in active], [1] * len(active))
        nxt = _argmax(model, model(nxt, batch, cache))
        result.token_times.append(time.perf_counter())
        result.forward_passes += 1
        result.per_step_batch.append(len(active))
    return result


@torch.inference_mode()
def mtp_generate(
    model: DeepseekV3,
    prompts: list[list[int]],
    max_new_tokens: int,
    eos_token_id: int | None = None,
    block_size: int = 16,
) -> GenerationResult:
    """Greedy decoding with one MTP draft token per step, verified by the main model (batched)."""
    if len(model.mtp) == 0:
        raise CloudMatrixError("the model has no MTP module; load it with its MTP weights (mtp=True)")
    cache = _new_cache(model, prompts, max_new_tokens, block_size)
    seqs = [cache.add_sequence() for _ in prompts]
    out: list[list[int]] = [[] for _ in prompts]
    result = GenerationResult(out)
    if max_new_tokens <= 0:
        return result

    # Prefill main model, then the MTP module over the same positions: position i gets token i + 1.
    lens = [len(p) for p in prompts]
    batch = cache.plan(seqs, lens)
    dev = cache.data.device
    hidden = model(torch.tensor([t for p in prompts for t in p], device=dev), batch, cache)
    last = torch.tensor(lens, device=dev).cumsum(0) - 1
    first = _argmax(model, hidden[last])
    shifted = [t for p, f in zip(prompts, first.tolist(), strict=True) for t in [*p[1:], f]]
    _, mtp_logits = model.forward_mtp(0, torch.tensor(shifted, device=dev), hidden, batch, cache)
    draft = mtp_logits[last].argmax(dim=-1)

    def emit(i: int, toks: list[int]) -> bool:
        """Append tokens to sequence i; False once it is finished."""
        for t in toks:
            out[i].append(t)
            if t == eos_token_id or len(out[i]) >= max_new_tokens:
                return False
        return True

    active = [i for i, t in enumerate(first.tolist()) if emit(i, [t])]
    keep = torch.tensor(active, dtype=torch.long, device=dev)
    cur, draft = first[keep], draft[keep]
    while active:
        n = len(active)
        batch = cache.plan([seqs[i] for i in active], [2] * n)
        hidden = model(torch.stack([cur, draft], dim=1).reshape(-1), batch, cache)
        greedy = _argmax(model, hidden).view(n, 2)
        ok = greedy[:, 0] == draft
        _, mtp_logits = model.forward_mtp(0, greedy.reshape(-1), hidden, batch, cache)
        new_draft = mtp_logits.view(n, 2, -1).argmax(dim=-1)[torch.arange(n, device=dev), ok.long()]
        result.forward_passes += 1
        result.per_step_batch.append(n)
        result.drafted += n
        result.accepted += int(ok.sum())

        still, rows = [], []
        for k, (i, acc, g) in enumerate(zip(active, ok.tolist(), greedy.tolist(), strict=True)):
            ctx = batch.context_lens[k]
            cache.set_len(seqs[i], ctx + (2 if acc else 1))  # drop a rejected draft's latent
            if emit(i, [g[0], g[1]] if acc else [g[0]]):
                still.append(i)
                rows.append(k)
        idx = torch.tensor(rows, dtype=torch.long, device=dev)
        cur = torch.where(ok, greedy[:, 1], greedy[:, 0])[idx]
        draft = new_draft[idx]
        active = still
    return result
