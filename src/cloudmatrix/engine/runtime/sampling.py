"""Token selection from logits: greedy, or temperature / top-k / top-p sampling with a per-request
generator (a request's seed fixes its draws; the rows of one step are filtered together and drawn
one by one from their own generators)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cloudmatrix.engine.runtime.params import SamplingParams


@dataclass
class RowSampler:
    """How one logits row picks its token."""

    params: SamplingParams
    generator: torch.Generator | None  # None for greedy rows


def filter_logits(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor):
    """Probabilities [N, V] after temperature, top-k (0 = off) and top-p (nucleus, 1 = off), per row."""
    logits = logits.float() / temperature[:, None]
    V = logits.shape[-1]
    if bool((top_k > 0).any()) or bool((top_p < 1).any()):
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        rank = torch.arange(V, device=logits.device)[None, :]
        k = torch.where(top_k > 0, top_k, V)[:, None]
        drop = rank >= k
        probs = torch.softmax(sorted_logits.masked_fill(drop, float("-inf")), dim=-1)
        # keep the smallest prefix whose mass reaches top_p (the token that crosses it is kept)
        before = probs.cumsum(dim=-1) - probs
        drop |= before >= top_p[:, None]
        drop[:, 0] = False
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter_(1, order, sorted_logits)
    return torch.softmax(logits, dim=-1)


def sample(logits: torch.Tensor, rows: list[RowSampler]) -> list[int]:
    """One token per row of logits [N, V]."""
    out = logits.argmax(dim=-1).tolist()
    picked = [i for i, r in enumerate(rows) if not r.params.greedy]
    if not picked:
        return out
    ps = [rows[i].params for i in picked]
    dev = logits.device
    probs = filter_logits(
        logits[picked],
        torch.tensor([p.temperature for p in ps], device=dev),
        torch.tensor([p.top_k for p in ps], device=dev),
        torch.tensor([p.top_p for p in ps], device=dev),
    )
    for j, i in enumerate(picked):
        out[i] = int(torch.multinomial(probs[j], 1, generator=rows[i].generator))
    return out
