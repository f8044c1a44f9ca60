"""The prefill step of one instance: a packed batch of prompts, experts shared over the EP group,
MLA as multi-head attention (optionally SP -> TP -> SP), communication overlapped with compute."""

from __future__ import annotations

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf.attention import gqa_ops, group_tokens_everywhere, mla_prefill_ops
from cloudmatrix.perf.breakdown import StepBreakdown
from cloudmatrix.perf.context import DieContext
from cloudmatrix.perf.dense import dense_ffn_ops, lm_head_op
from cloudmatrix.perf.deployment import Deployment
from cloudmatrix.perf.host import host_dispatch
from cloudmatrix.perf.memory import check_fit, memory_per_die
from cloudmatrix.perf.moe import dispatch_bytes_per_copy, moe_ops
from cloudmatrix.perf.overlap import comm_cores_for
from cloudmatrix.perf.step import LayerGroup, assemble
from cloudmatrix.specs.hardware import System
from cloudmatrix.specs.model import ModelSpec


def prefill_attention(c: DieContext, tokens: float, prompt_len: float):
    """One layer's attention ops for `tokens` prompt tokens on this die, of prompts of `prompt_len` tokens."""
    if c.model.attention == "mla":
        return mla_prefill_ops(c, tokens, prompt_len)
    return gqa_ops(c, tokens, tokens / prompt_len, prompt_len, causal_prefill=True)


def prefill_step(
    model: ModelSpec,
    system: System,
    dep: Deployment,
    tokens_per_die: float,
    prompt_len: float,
    check_memory: bool = True,
) -> StepBreakdown:
    """Cost of one prefill batch of `tokens_per_die` tokens per die, made of prompts of `prompt_len` tokens."""
    if tokens_per_die <= 0 or prompt_len <= 0:
        raise CloudMatrixError(
            f"tokens per die and prompt length must be positive, got {tokens_per_die} and {prompt_len}"
        )
    dep.validate(model, system)
    c = DieContext(model, system, dep)
    mb = dep.microbatches
    tokens = tokens_per_die / mb
    seqs = tokens / prompt_len
    attn = prefill_attention(c, tokens, prompt_len)
    groups = []
    loads: dict[str, float] = {}
    # a MoE model runs its dense layers on its own tokens, unless TP attention + TP MoE share the dies (then
    # the dense FFN is TP over them too, ending in its all-reduce like every other layer)
    dense_tp = dep.attn_tp if not model.is_moe or group_tokens_everywhere(c, "prefill") else 1
    if model.is_moe:
        moe, loads = moe_ops(c, tokens, "prefill")
        groups.append(LayerGroup("moe_layer", model.moe_layers, attn + moe))
    groups.append(LayerGroup("dense_layer", model.layers - model.moe_layers, attn + dense_ffn_ops(c, tokens, dense_tp)))
    # logits only for the last position of each prompt
    head = [lm_head_op(c, seqs)]
    if dep.mtp_depth:
        # the MTP module runs over the whole prompt to fill its own KV cache and draft the first token
        mtp_ffn = moe if model.is_moe else dense_ffn_ops(c, tokens, dense_tp)
        eh = c.matmul("mtp_eh_proj", "attn", tokens, [(2 * model.hidden, model.hidden)], "attn_proj")
        groups.append(LayerGroup("mtp_layer", dep.mtp_depth, [eh, *attn, *mtp_ffn]))
        head.append(lm_head_op(c, seqs * dep.mtp_depth, "mtp_head"))
    groups.append(LayerGroup("head", 1, head, overlappable=False))
    disp = dispatch_bytes_per_copy(c) if model.is_moe else 0.0
    mem = memory_per_die(model, dep, tokens_per_die, tokens, disp, phase="prefill")
    if check_memory:
        check_fit(mem, system, dep, f"prefill of {tokens_per_die:g} tokens per die")
    return assemble(
        "prefill",
        system.name,
        model.name,
        groups,
        mb,
        "comm-compute",
        1.0,
        comm_cores_for(system.chip),
        host=host_dispatch(dep.backend, "prefill", seqs * mb, loads.get("experts_hit_per_die", 0.0), mb),
        tokens_per_die=tokens_per_die,
        dies_per_chip=system.chip.dies,
        instance_dies=dep.dies,
        seqs_per_die=tokens_per_die / prompt_len,
        tokens_per_seq=prompt_len,
        memory=mem,
        expert_load=loads,
    )
