"""Microbatch pipelining of a decode pass, the CloudMatrix-Infer way: two microbatches, one's MoE
dispatch/combine in flight while the other computes.

Per MoE layer, with A and B the two halves of the batch:

    attention(A) -> route(A) -> dispatch(A) started
    attention(B)                              <- overlaps dispatch(A)
    experts(A) -> combine(A) started; route(B) -> dispatch(B) started
    shared experts(A); combine(A) awaited     <- shared experts overlap combine(A) and dispatch(B)
    experts(B) -> combine(B) started
    shared experts(B); combine(B) awaited

The transfers are `all_to_all_single(async_op=True)` (gloo runs them on its own threads, NCCL on
its own stream), so they overlap with the other microbatch's compute only if the machine has a
core to spare for them. Each half has its own AttentionBatch; results equal the plain pass (same
arithmetic per token, same summation order). Every rank of the group must run the same schedule:
an idle rank runs `idle_microbatched_pass` (two empty microbatches through the same collectives).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cloudmatrix.engine.kv_cache import AttentionBatch, PagedLatentCache
from cloudmatrix.engine.model.moe import MoE
from cloudmatrix.engine.parallel.expert_parallel import ExpertParallelExperts

Attn = Callable[[torch.Tensor], torch.Tensor]


class _Done:
    """A non-EP backend's result, computed at once (nothing to overlap)."""

    def __init__(self, out: torch.Tensor):
        self.out = out


def _begin(mlp: MoE, h: torch.Tensor):
    ids, w = mlp.gate(h)
    if isinstance(mlp.experts, ExpertParallelExperts):
        return mlp.experts.begin(h, ids, w, async_op=True)
    return _Done(mlp.experts(h, ids, w))


def _run(mlp: MoE, p) -> None:
    if not isinstance(p, _Done):
        mlp.experts.run(p)


def _end(mlp: MoE, p) -> torch.Tensor:
    return p.out if isinstance(p, _Done) else mlp.experts.end(p)


def pipelined_moe_layer(layer, x: list[torch.Tensor], attn: list[Attn]) -> list[torch.Tensor]:
    """One decoder layer with a DeepSeekMoE block over two microbatches (see the module docstring)."""
    mlp: MoE = layer.mlp
    a0 = x[0] + attn[0](layer.input_layernorm(x[0]))
    h0 = layer.post_attention_layernorm(a0)
    p0 = _begin(mlp, h0)
    a1 = x[1] + attn[1](layer.input_layernorm(x[1]))
    h1 = layer.post_attention_layernorm(a1)
    _run(mlp, p0)
    p1 = _begin(mlp, h1)
    s0 = mlp.shared_experts(h0) if mlp.shared_experts is not None else None
    r0 = _end(mlp, p0)
    y0 = a0 + (r0 if s0 is None else r0 + s0)
    _run(mlp, p1)
    s1 = mlp.shared_experts(h1) if mlp.shared_experts is not None else None
    r1 = _end(mlp, p1)
    y1 = a1 + (r1 if s1 is None else r1 + s1)
    return [y0, y1]


@torch.inference_mode()
def microbatched_forward(
    model,
    input_ids: list[torch.Tensor],
    batches: list[AttentionBatch | None],
    cache: PagedLatentCache,
) -> list[torch.Tensor]:
    """Final-norm hidden states of two microbatches (each input_ids [T_i] with its own AttentionBatch;
    None for an empty half, e.g. a rank with one sequence)."""
    if len(input_ids) != 2 or len(batches) != 2:
        raise ValueError("microbatched_forward takes exactly two microbatches")
    x = [model.embed_tokens(ids) for ids in input_ids]
    rope = [None if b is None else model.rotary(b.positions, x[0].dtype) for b in batches]

    def attn_of(layer, i: int) -> Attn:
        if batches[i] is None:
            return torch.zeros_like
        cos, sin = rope[i]
        return lambda h: layer.self_attn(h, cos, sin, batches[i], cache, None)

    for layer in model.layers:
        if isinstance(layer.mlp, MoE):
            x = pipelined_moe_layer(layer, x, [attn_of(layer, 0), attn_of(layer, 1)])
        else:
            x = [t if b is None else layer(t, *r, b, cache, None) for t, r, b in zip(x, rope, batches, strict=True)]
    return [model.norm(t) for t in x]


def idle_microbatched_pass(model) -> None:
    """A rank with no tokens: the microbatched schedule's collectives with two empty microbatches."""
    dev = model.embed_tokens.weight.device
    empty = torch.empty(0, model.config.hidden_size, dtype=model.dtype, device=dev)

    def no_attention(h: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(h)

    with torch.inference_mode():
        for layer in model.layers:
            if isinstance(layer.mlp, MoE):
                pipelined_moe_layer(layer, [empty, empty], [no_attention, no_attention])
