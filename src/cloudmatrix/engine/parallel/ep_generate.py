"""Greedy generation on one rank of an expert-parallel group, in lockstep with the other ranks.

Each rank serves its own prompts (attention data-parallel); every step goes through
`StepSync.agree`, so a rank whose sequences ended (or that has none) runs empty passes until every
rank is done. Sequences stop at EOS or at their own max_new_tokens, so they end at different steps.
Decode steps can run as two pipelined microbatches (microbatch.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cloudmatrix.engine.parallel.lockstep import MAIN, MAIN_MICROBATCHED, StepSync
from cloudmatrix.engine.parallel.microbatch import microbatched_forward
from cloudmatrix.errors import CloudMatrixError


@dataclass
class LockstepResult:
    tokens: list[list[int]]  # generated tokens per prompt of this rank
    steps: int  # group steps this rank took part in
    real_passes: int
    idle_passes: int


@torch.inference_mode()
def lockstep_generate(
    model,
    sync: StepSync,
    prompts: list[list[int]],
    max_new_tokens: int | list[int],
    eos_token_id: int | None = None,
    block_size: int = 16,
    microbatch: bool = False,
) -> LockstepResult:
    """Greedy tokens for this rank's prompts (may be none); returns when every rank of the group is done."""
    maxes = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    if len(maxes) != len(prompts) or any(len(p) == 0 for p in prompts):
        raise CloudMatrixError("give one max_new_tokens per prompt, and every prompt at least one token")
    blocks = sum(-(-(len(p) + m + 1) // block_size) for p, m in zip(prompts, maxes, strict=True))
    cache = model.new_cache(num_blocks=max(blocks, 1), block_size=block_size)
    seqs = [cache.add_sequence() for _ in prompts]
    out: list[list[int]] = [[] for _ in prompts]
    state = {"prefill": [i for i, m in enumerate(maxes) if m > 0], "active": [], "next": {}}
    dev = cache.data.device

    def emit(tokens: list[int], who: list[int]) -> None:
        still = []
        for i, t in zip(who, tokens, strict=True):
            out[i].append(t)
            if t != eos_token_id and len(out[i]) < maxes[i]:
                still.append(i)
            state["next"][i] = t
        state["active"] = still

    def prefill() -> None:
        who = state["prefill"]
        batch = cache.plan([seqs[i] for i in who], [len(prompts[i]) for i in who])
        hidden = model(torch.tensor([t for i in who for t in prompts[i]], device=dev), batch, cache)
        last = torch.tensor([len(prompts[i]) for i in who], device=dev).cumsum(0) - 1
        state["prefill"] = []
        emit(model.logits(hidden[last]).argmax(-1).tolist(), who)

    def decode() -> None:
        who = state["active"]
        ids = torch.tensor([state["next"][i] for i in who], device=dev)
        if microbatch:
            half = (len(who) + 1) // 2
            parts = [who[:half], who[half:]]
            batches = [cache.plan([seqs[i] for i in p], [1] * len(p)) if p else None for p in parts]
            hs = microbatched_forward(model, [ids[:half], ids[half:]], batches, cache)
            hidden = torch.cat(hs)
        else:
            hidden = model(ids, cache.plan([seqs[i] for i in who], [1] * len(who)), cache)
        emit(model.logits(hidden).argmax(-1).tolist(), who)

    while True:
        if state["prefill"]:
            passes, fns = [MAIN], [prefill]
        elif state["active"]:
            passes, fns = [MAIN_MICROBATCHED if microbatch else MAIN], [decode]
        else:
            passes, fns = [], []
        plan = sync.agree(passes, done=not passes)
        if plan.all_done:
            break
        sync.run(plan, fns)
    return LockstepResult(out, sync.steps, sync.real_passes, sync.idle_passes)
