"""The mixed step of a colocated instance: a prompt chunk and a decode batch in one forward pass.

TensorRT-LLM's PyTorch executor (and vLLM's) put the context requests' chunk tokens and the generation
requests' tokens into one input and run one model forward over all of them
(tensorrt_llm/_torch/pyexecutor/model_engine.py `_prepare_tp_inputs`: context tokens first, then the
generation tokens; attn_metadata.num_contexts / num_ctx_tokens mark the split, github.com/NVIDIA/TensorRT-LLM).
Every token-wise op therefore sees the prefill and decode tokens together: one weight read, one fixed cost
per kernel and one host dispatch per layer for the GEMMs, norms, router, MoE, dispatch/combine and
quantisation. Only attention splits by request kind, inside the one attention op: MLA.forward_impl
(tensorrt_llm/_torch/modules/attention.py) runs kv_a_proj_with_mqa and q_b_proj over all tokens, then
forward_context on the first num_ctx_tokens (the context kernel) and forward_absorption_generation on the rest
(the generation kernel over each sequence's KV cache); o_proj follows over all tokens. vLLM's MLA backend does
the same within one forward (vllm/v1/attention/backends/mla/common.py, github.com/vllm-project/vllm: the metadata's
num_decodes / num_decode_tokens / num_prefills split the batch between `_forward_decode`, absorbed, and
`_forward_prefill`, the compute-friendly form).

So the step here is a prefill step over the prompt tokens plus the decode tokens (the batch runs as a context
batch: prefill-form projections, the MoE and dispatch/combine at the step's token count), whose attention core
is the context attention of the prompt tokens plus the decode attention of the decode sequences. The MLA up-
projection kv_b runs on the context tokens only, and the generation tokens run W_UK / W_UV absorbed instead;
those hold the same weights and the same FLOPs per token (kv_lora x heads x (nope + v)), so one kv_b GEMM over
all tokens costs them, less the second read of those weights the absorbed BMMs make (TensorRT-LLM keeps a
k_b_proj_trans copy): not charged, at most one kv_b weight read per layer.

With no decode sequences the step is the prefill step (tests/perf/test_mixed_step.py).
"""

from __future__ import annotations

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf.attention import gqa_ops, group_tokens_everywhere, mla_decode_core
from cloudmatrix.perf.breakdown import StepBreakdown
from cloudmatrix.perf.context import DieContext
from cloudmatrix.perf.dense import dense_ffn_ops, lm_head_op
from cloudmatrix.perf.deployment import Deployment
from cloudmatrix.perf.host import host_dispatch
from cloudmatrix.perf.memory import check_fit, memory_per_die
from cloudmatrix.perf.moe import dispatch_bytes_per_copy, moe_ops
from cloudmatrix.perf.op import OpCost
from cloudmatrix.perf.overlap import comm_cores_for
from cloudmatrix.perf.prefill import prefill_attention
from cloudmatrix.perf.step import LayerGroup, assemble
from cloudmatrix.specs.hardware import System
from cloudmatrix.specs.model import ModelSpec

_CORE = "attention_core"  # the attention kernel's op name, prefill and decode (perf/kernels.py, perf/attention.py)


def _decode_core(c: DieContext, tokens: float, seqs: float, kv_len: float) -> OpCost:
    if c.model.attention == "mla":
        return mla_decode_core(c, tokens, seqs, kv_len)
    return _core(gqa_ops(c, tokens, seqs, kv_len, causal_prefill=False))


def _core(ops: list[OpCost]) -> OpCost:
    return next(op for op in ops if op.name == _CORE)


def _around_decode_core(
    c: DieContext, prompt_tokens: float, prompt_len: float, decode_tokens: float
) -> tuple[list[OpCost], list[OpCost]]:
    """A mixed layer's attention ops before and after the decode attention kernel (the only op that depends on the
    decode context): the projections, norms and collectives over all the tokens, the chunk's context kernel last
    in the first list."""
    ops = prefill_attention(c, prompt_tokens + decode_tokens, prompt_len)
    i = next(i for i, op in enumerate(ops) if op.name == _CORE)
    return [*ops[:i], _prefill_core(c, prompt_tokens, prompt_len)], ops[i + 1 :]


# the chunk's context kernel per (model, system, deployment, chunk): the chunk recurs with many decode batches
_PREFILL_CORE: dict[tuple, tuple] = {}


def _prefill_core(c: DieContext, prompt_tokens: float, prompt_len: float) -> OpCost:
    key = (id(c.model), id(c.system), c.dep, prompt_tokens, prompt_len)
    hit = _PREFILL_CORE.get(key)
    if hit is not None and hit[1] is c.model and hit[2] is c.system:
        return hit[0]
    if len(_PREFILL_CORE) > 4096:
        _PREFILL_CORE.clear()
    core = _core(prefill_attention(c, prompt_tokens, prompt_len))
    _PREFILL_CORE[key] = (core, c.model, c.system)  # holding the objects keeps their ids from being reused
    return core


def mixed_attention(
    c: DieContext, prompt_tokens: float, prompt_len: float, decode_tokens: float, decode_seqs: float, kv_len: float
) -> list[OpCost]:
    """One layer's attention for `prompt_tokens` chunk tokens (prompts of `prompt_len`) and `decode_tokens` tokens of
    `decode_seqs` decoding sequences at KV length `kv_len`: the projections, norms and collectives over all the
    tokens, the context attention kernel for the chunk and the generation kernel for the decode sequences."""
    if decode_tokens <= 0:
        return prefill_attention(c, prompt_tokens, prompt_len)
    before, after = _around_decode_core(c, prompt_tokens, prompt_len, decode_tokens)
    return [*before, _decode_core(c, decode_tokens, decode_seqs, kv_len), *after]


# The ops of a mixed step that do not depend on the decode context, per (model, system, deployment, shape): the
# simulator costs the same chunk and decode batch at a context that moves every step (as perf/decode.py _BATCH_OPS)
_SHAPE_OPS: dict[tuple, tuple] = {}


def _shape_ops(c: DieContext, prompt: float, prompt_len: float, dseqs: float) -> tuple:
    # expert_load is not part of a Deployment's equality, so its identity is part of the key
    key = (id(c.model), id(c.system), c.dep, id(c.dep.expert_load), prompt, prompt_len, dseqs)
    hit = _SHAPE_OPS.get(key)
    if hit is not None and hit[-1] is c.model and hit[-2] is c.system and hit[-3] is c.dep.expert_load:
        return hit
    model, dep = c.model, c.dep
    dtokens = dseqs * (1 + dep.mtp_depth)  # the last token plus the drafts to verify
    tokens = prompt + dtokens
    attn = _around_decode_core(c, prompt, prompt_len, dtokens) if dtokens > 0 else None
    prefill_attn = prefill_attention(c, prompt, prompt_len) if dtokens <= 0 else None
    loads: dict[str, float] = {}
    moe: list[OpCost] = []
    if model.is_moe:
        moe, loads = moe_ops(c, tokens, "prefill")
    dense_tp = dep.attn_tp if not model.is_moe or group_tokens_everywhere(c, "prefill") else 1
    dense = dense_ffn_ops(c, tokens, dense_tp)
    # logits for the last position of each prompt and for every decode token
    prompt_seqs = prompt / prompt_len
    head = [lm_head_op(c, prompt_seqs + dtokens)]
    mtp = None
    if dep.mtp_depth:
        # the MTP module runs over the whole prompt chunk and, per draft position, on one token per decoding sequence
        mtp_tokens = prompt + dseqs
        mtp_ffn = moe_ops(c, mtp_tokens, "prefill")[0] if model.is_moe else dense_ffn_ops(c, mtp_tokens, dense_tp)
        eh = c.matmul("mtp_eh_proj", "attn", mtp_tokens, [(2 * model.hidden, model.hidden)], "attn_proj")
        mtp_attn = _around_decode_core(c, prompt, prompt_len, dseqs) if dseqs > 0 else (prefill_attn, [])
        mtp = (eh, mtp_attn, mtp_ffn)
        head.append(lm_head_op(c, (prompt_seqs + dseqs) * dep.mtp_depth, "mtp_head"))
    if len(_SHAPE_OPS) > 4096:
        _SHAPE_OPS.clear()
    # holding the objects keeps their ids from being reused while the entry lives
    hit = (attn, prefill_attn, moe, loads, dense, head, mtp, dep.expert_load, c.system, model)
    _SHAPE_OPS[key] = hit
    return hit


def mixed_step(
    model: ModelSpec,
    system: System,
    dep: Deployment,
    prompt_tokens_per_die: float,
    prompt_len: float,
    decode_seqs_per_die: float,
    kv_len: float,
    host_phase: str = "prefill",
    check_memory: bool = True,
) -> StepBreakdown:
    """Cost of one forward over `prompt_tokens_per_die` prompt tokens per die (prompts of `prompt_len` tokens) and
    one decode step of `decode_seqs_per_die` sequences per die at mean context `kv_len`. `host_phase` is the phase
    whose host dispatch the step pays (the serving-stack profile's; perf/host.py): a batch holding a context
    request runs as a prefill step does (eager in TensorRT-LLM, backends/trtllm.toml [phases])."""
    if prompt_tokens_per_die <= 0 or prompt_len <= 0:
        raise CloudMatrixError(
            f"prompt tokens per die and prompt length must be positive, got {prompt_tokens_per_die} and {prompt_len}"
        )
    if decode_seqs_per_die < 0 or kv_len < 0:
        raise CloudMatrixError(
            f"decode sequences per die and KV length must be >= 0, got {decode_seqs_per_die} and {kv_len}"
        )
    dep.validate(model, system)
    c = DieContext(model, system, dep)
    mb = dep.microbatches
    prompt = prompt_tokens_per_die / mb
    prompt_seqs = prompt / prompt_len
    dseqs = decode_seqs_per_die / mb
    dtokens = dseqs * (1 + dep.mtp_depth)  # the last token plus the drafts to verify
    tokens = prompt + dtokens
    around, prefill_attn, moe, loads, dense, head, mtp, *_ = _shape_ops(c, prompt, prompt_len, dseqs)
    attn = prefill_attn if around is None else [*around[0], _decode_core(c, dtokens, dseqs, kv_len), *around[1]]
    groups = []
    if model.is_moe:
        groups.append(LayerGroup("moe_layer", model.moe_layers, attn + moe))
    groups.append(LayerGroup("dense_layer", model.layers - model.moe_layers, attn + dense))
    if mtp is not None:
        eh, (before, after), mtp_ffn = mtp
        mtp_attn = [*before, _decode_core(c, dseqs, dseqs, kv_len), *after] if dseqs > 0 else before
        groups.append(LayerGroup("mtp_layer", dep.mtp_depth, [eh, *mtp_attn, *mtp_ffn]))
    groups.append(LayerGroup("head", 1, head, overlappable=False))
    disp = dispatch_bytes_per_copy(c) if model.is_moe else 0.0
    mem = memory_per_die(model, dep, prompt_tokens_per_die + decode_seqs_per_die * kv_len, tokens, disp, "prefill")
    if check_memory:
        check_fit(
            mem, system, dep,
            f"mixed step of {prompt_tokens_per_die:g} prompt tokens and {decode_seqs_per_die:g} decoding sequences "
            "per die",
        )  # fmt: skip
    seqs = (prompt_seqs + dseqs) * mb
    return assemble(
        "mixed",
        system.name,
        model.name,
        groups,
        mb,
        "comm-compute",
        1.0,
        comm_cores_for(system.chip),
        host=host_dispatch(dep.backend, host_phase, seqs, loads.get("experts_hit_per_die", 0.0), mb),
        tokens_per_die=tokens * mb,
        dies_per_chip=system.chip.dies,
        instance_dies=dep.dies,
        seqs_per_die=seqs,
        tokens_per_seq=tokens / (prompt_seqs + dseqs),
        memory=mem,
        expert_load=dict(loads),
    )
