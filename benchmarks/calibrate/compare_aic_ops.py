"""The twin's decode and prefill step next to aiconfigurator's own op-level estimate, op group by op group.

    pip install -e '.[calibrate]'
    OMP_NUM_THREADS=1 python benchmarks/calibrate/compare_aic_ops.py                 # every system x backend
    OMP_NUM_THREADS=1 python benchmarks/calibrate/compare_aic_ops.py --systems b200_sxm --backends trtllm
    OMP_NUM_THREADS=1 python benchmarks/calibrate/compare_aic_ops.py --systems gb300 --backends trtllm --quant fp4 \
        --prefill-worker 1 2 1 2        # one prefill worker shape: attention TP DP, MoE TP EP

DeepSeek-R1 on 8 GPUs, attention TP8 and MoE EP8 (TensorRT-LLM's "TEP8" layout), fp8 checkpoint (--quant), FP8 KV.
aiconfigurator side: `cli_estimate` builds its model and picks its tables; every op of that model is then
evaluated alone through aiconfigurator's own single-op engine (the figures `per_ops_data` sums), at each grid
point: decode with B sequences at context isl + osl / 2, prefill of one prompt of T tokens. Only these per-op
kernel figures are compared, never the estimate's end-to-end corrections (queueing factor, dispatch overhead,
mix-step efficiency). Figures are microseconds per layer (aiconfigurator scales every op by the 61 layers; the
twin's MoE-layer rows are divided by its 58 MoE layers), the step in milliseconds. Ratio = twin / aiconfigurator.
aiconfigurator's overlap op (routed || shared experts) is shown as its own line, "moe_block".
Output goes to docs/calibration.md ("The twin against aiconfigurator's op tables").
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from run import SYSTEMS  # noqa: E402

from cloudmatrix.perf.decode import decode_step  # noqa: E402
from cloudmatrix.perf.deployment import build_deployment  # noqa: E402
from cloudmatrix.perf.prefill import prefill_step  # noqa: E402
from cloudmatrix.specs.hardware import load_system  # noqa: E402
from cloudmatrix.specs.model import load_model  # noqa: E402

GPUS = 8
DECODE_BATCH_PER_GPU = (1, 4, 16, 64, 256)
PREFILL_TOKENS = (1024, 4096, 16384)
PREFILL_BATCHES = (1, 2, 4, 8)  # prompts per attention-DP rank, --prefill-worker
ISL, OSL = 1024, 1024

# op group -> (aiconfigurator op names, twin op names)
GROUPS = {
    "mla_block": (
        {"generation_mla_block", "context_mla_block"},
        {
            "mla_prolog", "attention_core", "o_proj_quant", "mla_epilog_o_proj", "down_proj_quant", "mla_down_proj",
            "up_proj_quant", "mla_up_proj", "rope_latent_norm", "o_proj",
        },
    ),
    "norms": (
        {"generation_add_norm_1", "generation_add_norm_2", "context_add_norm_1", "context_add_norm_2"},
        {"norms_residual"},
    ),
    "router": ({"generation_router_gemm", "context_router_gemm"}, {"router"}),
    "routed_moe": (
        {"generation_moe", "context_moe"},
        {"routed_experts", "routed_swiglu", "token_permute"},
    ),
    "shared": (
        {
            "generation_shared_gate_up_gemm", "generation_shared_act_gate", "generation_shared_ffn2_gemm",
            "context_shared_gate_up_gemm", "context_shared_act_gate", "context_shared_ffn2_gemm",
        },
        {"shared_experts", "shared_swiglu"},
    ),
    "comm": (
        {
            "generation_moe_pre_dispatch", "generation_moe_post_dispatch", "context_moe_pre_dispatch",
            "context_moe_post_dispatch",
        },
        {
            "attn_all_reduce", "moe_all_reduce", "dispatch", "combine", "dispatch_quant", "combine_sum",
            "sp_to_tp_all_gather", "tp_to_sp_all_to_all", "attn_tp_all_gather", "attn_tp_reduce_scatter",
            "moe_tp_all_gather", "moe_tp_reduce_scatter",
        },
    ),
}  # fmt: skip


def aic_session(aic_system: str, backend: str, quant: str | None, layout: dict | None = None, batch: int = 4):
    """aiconfigurator's model and database as cli_estimate builds them (captured from its InferenceSession).
    `layout`: tp_size / attention_dp_size / moe_tp_size / moe_ep_size (default TEP8)."""
    widths = layout or {"tp_size": GPUS, "attention_dp_size": 1, "moe_tp_size": 1, "moe_ep_size": GPUS}
    from aiconfigurator.cli.api import cli_estimate
    from aiconfigurator.sdk import inference_session as session

    captured = {}
    original = session.InferenceSession.__init__

    def capture(self, model, database, *args, **kwargs):
        captured["model"], captured["db"] = model, database
        original(self, model, database, *args, **kwargs)

    session.InferenceSession.__init__ = capture
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            cli_estimate(
                model_path="deepseek-ai/DeepSeek-R1", system_name=aic_system, mode="agg", backend_name=backend,
                isl=ISL, osl=OSL, pp_size=1, **widths, batch_size=batch, gemm_quant_mode=quant, moe_quant_mode=quant,
            )  # fmt: skip
    finally:
        session.InferenceSession.__init__ = original
    return captured["model"], captured["db"]


def aic_ops(model, db, phase: str, batch: int, s: int) -> tuple[dict[str, float], float]:
    """(seconds per layer of every leaf op, with the routed || shared overlap op as "moe_block"; the step's
    seconds, the sum of the top-level ops as aiconfigurator's estimate sums them)."""
    from aiconfigurator_core.sdk.engine import _evaluate_single_op

    is_context = phase == "prefill"
    out: dict[str, float] = {}

    def ev(op):
        r = _evaluate_single_op(db, op, is_context=is_context, batch_size=batch, s=s)
        return float(getattr(r, "latency", r)) * 1e-3

    def walk(op):
        children = [c for g in ("_group_a", "_group_b") for c in (getattr(op, g, None) or [])]
        if children:
            out["moe_block"] = ev(op) / model._num_layers
            for c in children:
                walk(c)
        else:  # a leaf, or the MLA block (its module row where the table has it, else its granular fallback)
            out[getattr(op, "_name", "")] = ev(op) / model._num_layers

    step = 0.0
    for op in model.context_ops if is_context else model.generation_ops:
        step += ev(op)
        walk(op)
    return out, step


def twin_groups(step) -> dict[str, float]:
    """Seconds per MoE layer of each group, from the step's MoE-layer rows."""
    rows = [r for r in step.rows if r.group == "moe_layer"]
    layers = rows[0].runs if rows else 1
    out = {}
    for g, (_, names) in GROUPS.items():
        out[g] = sum(r.time for r in rows if r.name in names) / layers
    moe_side = {"router", "routed_experts", "routed_swiglu", "token_permute", "shared_experts", "shared_swiglu"}
    moe_side |= {"moe_all_reduce", "dispatch", "combine", "dispatch_quant", "combine_sum"}
    out["moe_block"] = sum(r.time for r in rows if r.name in moe_side) / layers
    return out


def aic_groups(ops: dict[str, float]) -> dict[str, float]:
    out = {g: sum(v for k, v in ops.items() if k in names) for g, (names, _) in GROUPS.items()}
    out["moe_block"] = ops.get("moe_block", 0.0)
    return out


def table(title: str, rows: list[tuple[str, dict, dict, float, float]]) -> None:
    keys = [*GROUPS, "moe_block"]
    print(f"\n{title}")
    print(f"{'point':>10s} " + " ".join(f"{k:>22s}" for k in keys) + f" {'step ms twin/aic':>22s}")
    for point, tw, ai, st, sa in rows:
        cells = []
        for k in keys:
            a, t = ai.get(k, 0.0) * 1e6, tw.get(k, 0.0) * 1e6
            ratio = f"{t / a:5.2f}" if a > 0 else "  -  "
            cells.append(f"{t:7.1f}/{a:7.1f} {ratio}")
        step = f"{st * 1e3:7.2f}/{sa * 1e3:7.2f} {st / sa:5.2f}"
        print(f"{point:>10s} " + " ".join(f"{c:>22s}" for c in cells) + f" {step:>22s}")


def compare(aic_system: str, backend: str, quant: str) -> None:
    aq = {"fp8": None, "fp4": "nvfp4"}[quant]
    try:
        model, db = aic_session(aic_system, backend, aq)
    except Exception as e:  # a system x backend aiconfigurator cannot estimate: say so and go on
        print(f"\n{aic_system} {backend} {quant}: aiconfigurator gives no estimate ({type(e).__name__}: {e})"[:200])
        return
    r1 = load_model("deepseek-r1")
    system = load_system(SYSTEMS[aic_system][1])
    # FP8 KV cache, as aiconfigurator infers it from the checkpoint
    dep = build_deployment(
        r1, dies=GPUS, ep=GPUS, attn_tp=GPUS, precision=quant, kv_cache="fp8", backend=backend, shared_expert_dies=0,
        redundant_experts=0, system=system,
    )  # fmt: skip
    rows = []
    for b in DECODE_BATCH_PER_GPU:
        total = b * GPUS  # attention TP8: every GPU runs all B sequences for its 16 heads
        ai, sa = aic_ops(model, db, "decode", total, ISL + OSL // 2)
        st = decode_step(r1, system, dep, b, ISL + OSL // 2, check_memory=False)
        rows.append((f"B/GPU {b}", twin_groups(st), aic_groups(ai), st.step_time, sa))
    table(f"{aic_system} {backend} {quant} decode at context {ISL + OSL // 2}, us per layer twin/aic ratio", rows)
    rows = []
    for t in PREFILL_TOKENS:
        ai, sa = aic_ops(model, db, "prefill", 1, t)
        st = prefill_step(r1, system, dep, t / GPUS, t, check_memory=False)
        rows.append((f"T {t}", twin_groups(st), aic_groups(ai), st.step_time, sa))
    table(f"{aic_system} {backend} {quant} prefill (one prompt of T tokens), us per layer twin/aic ratio", rows)


def compare_prefill_worker(aic_system: str, backend: str, quant: str, tp: int, dp: int, moe_tp: int, ep: int) -> None:
    """One prefill worker shape (attention TP x DP, MoE TP x EP), each attention-DP rank running `b` prompts of
    ISL tokens per step, for b in PREFILL_BATCHES; the step also per 1,024 tokens per rank (a throughput bound)."""
    aq = {"fp8": None, "fp4": "nvfp4"}[quant]
    layout = {"tp_size": tp, "attention_dp_size": dp, "moe_tp_size": moe_tp, "moe_ep_size": ep}
    r1 = load_model("deepseek-r1")
    system = load_system(SYSTEMS[aic_system][1])
    dep = build_deployment(
        r1, dies=tp * dp, ep=ep, attn_tp=tp, moe_tp=moe_tp, precision=quant, kv_cache="fp8", backend=backend,
        shared_expert_dies=0, redundant_experts=0, system=system,
    )  # fmt: skip
    rows, per_k = [], []
    for b in PREFILL_BATCHES:
        try:
            model, db = aic_session(aic_system, backend, aq, layout, batch=b)
        except Exception as e:  # a shape aiconfigurator cannot estimate: say so and go on
            print(f"\n{aic_system} {backend} {quant} {layout} b={b}: no aiconfigurator estimate ({type(e).__name__})")
            return
        ai, sa = aic_ops(model, db, "prefill", b, ISL)
        st = prefill_step(r1, system, dep, b * ISL, ISL, check_memory=False)
        rows.append((f"b {b}", twin_groups(st), aic_groups(ai), st.step_time, sa))
        per_k.append(f"b {b} {st.step_time * 1e3 / b:.1f} / {sa * 1e3 / b:.1f}")
    what = f"tp{tp} dp{dp} moe_tp{moe_tp} ep{ep}"
    table(f"{aic_system} {backend} {quant} prefill worker [{what}], b prompts of {ISL} per rank, us per layer", rows)
    print(f"step ms per prompt per rank, twin / aiconfigurator: {', '.join(per_k)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", nargs="*", default=["h200_sxm", "b200_sxm", "gb200", "gb300", "b300_sxm"])
    ap.add_argument("--backends", nargs="*", default=["trtllm", "sglang", "vllm"])
    ap.add_argument("--quant", default="fp8", choices=("fp8", "fp4"))
    ap.add_argument(
        "--prefill-worker", nargs=4, type=int, metavar=("TP", "DP", "MOE_TP", "EP"),
        help="compare one prefill worker shape at 1..8 prompts per rank instead of the TEP8 grid",
    )  # fmt: skip
    args = ap.parse_args(argv)
    logging.disable(logging.WARNING)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.prefill_worker:
        for s in args.systems:
            for b in args.backends:
                compare_prefill_worker(s, b, args.quant, *args.prefill_worker)
        return 0
    for s in args.systems:
        for b in args.backends:
            compare(s, b, args.quant)
    return 0


if __name__ == "__main__":
    sys.exit(main())
