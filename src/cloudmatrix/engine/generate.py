"""Greedy generation of a fixed batch of token-id prompts, as a thin helper over the runtime.

Tests and static-batch callers use it; serving goes through `runtime.LLMEngine` directly. All
prompts are submitted at once with a token budget that prefills them in one step, so the passes
are those of static batching: one prefill, then one decode pass per step (sequences leave the batch
as they end). With `mtp_generate` each decode pass verifies one MTP draft token per sequence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from cloudmatrix.engine.model.model import DeepseekV3
from cloudmatrix.engine.runtime.engine import LLMEngine
from cloudmatrix.engine.runtime.params import EngineConfig, SamplingParams
from cloudmatrix.errors import CloudMatrixError


@dataclass
class GenerationResult:
    tokens: list[list[int]]  # generated tokens per prompt (without the prompt)
    forward_passes: int = 0  # main-model decode passes after prefill
    drafted: int = 0  # MTP draft tokens proposed
    accepted: int = 0  # of which the main model confirmed
    # time.perf_counter() after each step: [0] after the prefill, then one per decode pass
    token_times: list[float] = field(default_factory=list, repr=False)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0


def _run(
    model: DeepseekV3, prompts: list[list[int]], max_new: int, eos: int | None, block_size: int, speculative: bool
) -> GenerationResult:
    if not prompts or any(len(p) == 0 for p in prompts):
        raise CloudMatrixError("every prompt needs at least one token")
    out = GenerationResult([[] for _ in prompts])
    if max_new <= 0:
        return out
    config = EngineConfig(
        block_size=block_size,
        kv_cache_tokens=sum(len(p) + max_new + 2 for p in prompts) + block_size * len(prompts),
        max_num_seqs=len(prompts),
        max_num_batched_tokens=sum(len(p) for p in prompts) + 2 * len(prompts),
        enable_prefix_caching=False,
        speculative=speculative,
        max_model_len=max(len(p) for p in prompts) + max_new,
        device=str(model.embed_tokens.weight.device),
    )
    engine = LLMEngine.from_model(model, eos_token_ids=() if eos is None else (eos,), config=config)
    params = SamplingParams(max_tokens=max_new)
    for i, p in enumerate(prompts):
        engine.add_request(str(i), p, params)
    while engine.has_unfinished():
        for o in engine.step():
            out.tokens[int(o.request_id)].extend(o.new_token_ids)
        out.token_times.append(time.perf_counter())
    out.forward_passes = engine.runner.forward_passes - 1
    out.drafted, out.accepted = engine.runner.drafted, engine.runner.accepted
    return out


def greedy_generate(
    model: DeepseekV3,
    prompts: list[list[int]],
    max_new_tokens: int,
    eos_token_id: int | None = None,
    block_size: int = 16,
) -> GenerationResult:
    """Greedy decoding of a batch of prompts of any lengths; stops a sequence at eos or max_new_tokens."""
    return _run(model, prompts, max_new_tokens, eos_token_id, block_size, speculative=False)


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
    return _run(model, prompts, max_new_tokens, eos_token_id, block_size, speculative=True)
