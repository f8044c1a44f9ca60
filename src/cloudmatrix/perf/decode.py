"""The decode step of one instance: every die runs attention for its own sequences (DP), experts are
shared over the EP group, optionally two microbatches on two streams and MTP drafts."""

from __future__ import annotations

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf.attention import (
    gqa_ops,
    group_tokens_everywhere,
    mla_decode_core,
    mla_decode_ops,
    mla_decode_parts,
)
from cloudmatrix.perf.breakdown import StepBreakdown
from cloudmatrix.perf.context import DieContext
from cloudmatrix.perf.dense import dense_ffn_ops, lm_head_op
from cloudmatrix.perf.deployment import Deployment
from cloudmatrix.perf.host import host_dispatch
from cloudmatrix.perf.memory import check_fit, memory_per_die
from cloudmatrix.perf.moe import dispatch_bytes_per_copy, moe_ops
from cloudmatrix.perf.step import LayerGroup, assemble
from cloudmatrix.specs.hardware import System
from cloudmatrix.specs.model import ModelSpec


def _attention(c: DieContext, tokens: float, seqs: float, kv_len: float):
    if c.model.attention == "mla":
        return mla_decode_ops(c, tokens, seqs, kv_len)
    return gqa_ops(c, tokens, seqs, kv_len, causal_prefill=False)


# Ops that depend on the batch but not on the context, per (model, system, deployment, batch): the
# simulator costs the same batch at many contexts, a planner sweeps contexts per batch.
_BATCH_OPS: dict[tuple, tuple] = {}


def _batch_ops(c: DieContext, batch_per_die: float) -> tuple:
    # expert_load is not part of a Deployment's equality, so its identity is part of the key
    key = (id(c.model), id(c.system), c.dep, id(c.dep.expert_load), batch_per_die)
    hit = _BATCH_OPS.get(key)
    if hit is not None and hit[-1] is c.model and hit[-2] is c.system and hit[-3] is c.dep.expert_load:
        return hit
    model, dep = c.model, c.dep
    seqs = batch_per_die / dep.microbatches
    tokens = seqs * (1 + dep.mtp_depth)
    loads: dict[str, float] = {}
    moe = mtp_ffn = ()
    if model.is_moe:
        moe, loads = moe_ops(c, tokens, "decode")
    # a MoE model runs its dense layers on its own tokens, unless TP attention + TP MoE share the dies (then
    # the dense FFN is TP over them too, ending in its all-reduce like every other layer)
    dense_tp = dep.attn_tp if not model.is_moe or group_tokens_everywhere(c, "decode") else 1
    dense = dense_ffn_ops(c, tokens, dense_tp)
    # the LM head runs once on the merged microbatches, on the whole die (perf/step.py LayerGroup.merged)
    whole = c if c.stream_share is None else DieContext(model, c.system, dep)
    head = [lm_head_op(whole, batch_per_die * (1 + dep.mtp_depth))]
    mla = model.attention == "mla"
    attn_parts = mla_decode_parts(c, tokens) if mla else None
    mtp_parts = eh = None
    if dep.mtp_depth:
        mtp_ffn = moe_ops(c, seqs, "decode")[0] if model.is_moe else dense_ffn_ops(c, seqs, dense_tp)
        eh = c.matmul("mtp_eh_proj", "attn", seqs, [(2 * model.hidden, model.hidden)], "attn_proj")
        mtp_parts = mla_decode_parts(c, seqs) if mla else None
        head.append(lm_head_op(whole, batch_per_die * dep.mtp_depth, "mtp_head"))
    if len(_BATCH_OPS) > 4096:
        _BATCH_OPS.clear()
    # holding the objects keeps their ids from being reused while the entry lives
    hit = (list(moe), loads, dense, head, attn_parts, list(mtp_ffn), eh, mtp_parts, dep.expert_load, c.system, model)
    _BATCH_OPS[key] = hit
    return hit


def _attn(c: DieContext, parts, tokens: float, seqs: float, kv_len: float) -> list:
    if parts is None:
        return _attention(c, tokens, seqs, kv_len)
    return [*parts[0], mla_decode_core(c, tokens, seqs, kv_len), *parts[1]]


def decode_step(
    model: ModelSpec,
    system: System,
    dep: Deployment,
    batch_per_die: float,
    kv_len: float,
    check_memory: bool = True,
) -> StepBreakdown:
    """Cost of one decode step with `batch_per_die` sequences per die at mean context `kv_len`."""
    if batch_per_die <= 0:
        raise CloudMatrixError(f"batch per die must be positive, got {batch_per_die}")
    if kv_len < 0:
        raise CloudMatrixError(f"KV length must be >= 0, got {kv_len}")
    dep.validate(model, system)
    share = dep.attention_stream_share
    c = DieContext(model, system, dep, {"attn": share, "moe": 1 - share} if dep.microbatches > 1 else None)
    mb = dep.microbatches
    seqs = batch_per_die / mb  # one microbatch
    tokens = seqs * (1 + dep.mtp_depth)  # the last token plus the drafts to verify
    moe, loads, dense, head, attn_parts, mtp_ffn, eh, mtp_parts, *_ = _batch_ops(c, batch_per_die)
    attn = _attn(c, attn_parts, tokens, seqs, kv_len)
    groups = []
    if model.is_moe:
        groups.append(LayerGroup("moe_layer", model.moe_layers, attn + moe))
    groups.append(LayerGroup("dense_layer", model.layers - model.moe_layers, attn + dense))
    if dep.mtp_depth:
        # each draft position runs the MTP module (eh_proj + one decoder layer + shared head) on one token per seq
        mtp_attn = _attn(c, mtp_parts, seqs, seqs, kv_len)
        groups.append(LayerGroup("mtp_layer", dep.mtp_depth, [eh, *mtp_attn, *mtp_ffn]))
    groups.append(LayerGroup("head", 1, head, overlappable=False, merged=True))
    disp = dispatch_bytes_per_copy(c) if model.is_moe else 0.0
    mem = memory_per_die(model, dep, batch_per_die * kv_len, tokens * mb, disp)
    if check_memory:
        check_fit(mem, system, dep, f"decode with {batch_per_die:g} sequences per die at KV length {kv_len:g}")
    return assemble(
        "decode",
        system.name,
        model.name,
        groups,
        mb,
        "core-split",
        dep.attention_stream_share,
        host=host_dispatch(dep.backend, "decode", batch_per_die, loads.get("experts_hit_per_die", 0.0), mb),
        tokens_per_die=batch_per_die * dep.tokens_per_step(),
        dies_per_chip=system.chip.dies,
        instance_dies=dep.dies,
        seqs_per_die=batch_per_die,
        tokens_per_seq=dep.tokens_per_step(),
        memory=mem,
        expert_load=dict(loads),
    )
