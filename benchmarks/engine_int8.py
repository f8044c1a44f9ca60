"""INT8 W8A8 in the serving engine: accuracy against the float model, matmul speed, EP traffic per token.

    PYTHONPATH=src python benchmarks/engine_int8.py            # all three parts (~2-3 min on 2 vCPUs)
    PYTHONPATH=src python benchmarks/engine_int8.py --part accuracy|speed|ep

1. accuracy: a small random DeepSeek-V3 (cloudmatrix.engine.loader.random_model; MLA, DeepSeekMoE,
   shared experts), fp32 vs the same model after quantize_model (W8A8 attention projections except
   kv_b_proj, dense/shared MLPs and routed experts; router, norms, LM head float), and vs bf16 for
   scale. Prefill logits at every position of a seeded prompt set: top-1 agreement and mean
   KL(float || other). Random weights have no outlier channels, so this is the easy case for INT8.
2. speed: one thread, y = x W^T at serving shapes: fp32 and bf16 F.linear, the raw int8 x int8 ->
   int32 torch._int_mm, and Int8Linear end to end (quantise activations + int matmul + rescale).
3. ep: bytes per token of dispatch and combine measured by ExpertParallelExperts on 2 gloo ranks,
   fp32 vs INT8 dispatch, on the tiny test model shape (hidden 64, top-3 of 8 experts).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from cloudmatrix.engine.loader import random_model
from cloudmatrix.engine.model.config import ModelConfig
from cloudmatrix.engine.model.experts import ExpertWeights
from cloudmatrix.engine.parallel import ExpertParallelExperts, SlotMap, dispatch_row_bytes, run_ranks
from cloudmatrix.engine.quant import Int8Linear, int8_path_counts, quantize_model, quantize_per_token
from cloudmatrix.engine.quant.int8 import DEFAULT_SKIP, cpu_has_int8_dot, select_path, set_int8_matmul_mode

SMALL = dict(
    vocab_size=512, hidden_size=256, intermediate_size=512, moe_intermediate_size=128, num_hidden_layers=4,
    num_attention_heads=8, num_key_value_heads=8, n_routed_experts=16, n_shared_experts=1,
    num_experts_per_tok=4, n_group=4, topk_group=2, first_k_dense_replace=1, routed_scaling_factor=2.5,
    kv_lora_rank=64, q_lora_rank=96, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
    max_position_embeddings=1024, initializer_range=0.1, num_nextn_predict_layers=0,
)  # fmt: skip
SEED = 0
ATTENTION = ("q_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "o_proj")
NUM_PROMPTS, PROMPT_LEN = 16, 32


def _prefill_logits(model, prompts: list[list[int]]) -> torch.Tensor:
    cache = model.new_cache(num_blocks=sum(-(-len(p) // 16) for p in prompts) + 1)
    seqs = [cache.add_sequence() for _ in prompts]
    batch = cache.plan(seqs, [len(p) for p in prompts])
    with torch.inference_mode():
        return model.logits(model(torch.tensor([t for p in prompts for t in p]), batch, cache)).float()


def _compare(ref: torch.Tensor, other: torch.Tensor) -> tuple[float, float]:
    agree = (ref.argmax(-1) == other.argmax(-1)).float().mean().item()
    kl = F.kl_div(other.log_softmax(-1), ref.log_softmax(-1), log_target=True, reduction="batchmean").item()
    return agree, kl


def accuracy() -> None:
    cfg = ModelConfig.from_dict(dict(SMALL))
    g = torch.Generator().manual_seed(SEED)
    prompts = torch.randint(0, cfg.vocab_size, (NUM_PROMPTS, PROMPT_LEN), generator=g).tolist()
    ref = _prefill_logits(random_model(cfg, seed=SEED), prompts)
    probs = ref.softmax(-1)
    print(
        f"accuracy: random DeepSeek-V3 hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, "
        f"{cfg.n_routed_experts} experts top-{cfg.num_experts_per_tok}, vocab {cfg.vocab_size}; "
        f"{NUM_PROMPTS} prompts x {PROMPT_LEN} tokens (seed {SEED}) = {ref.shape[0]} positions"
    )
    entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1).mean().item()
    print(f"  float model: mean top-1 prob {probs.max(-1).values.mean():.3f}, mean entropy {entropy:.2f} nats")
    bf16 = _prefill_logits(random_model(cfg, seed=SEED, dtype=torch.bfloat16), prompts)
    model = random_model(cfg, seed=SEED)
    report = quantize_model(model)
    int8 = _prefill_logits(model, prompts)
    paths = int8_path_counts(model)
    kept = sorted({n.split(".")[-1] for n in report.kept_float})
    print(f"  W8A8: {len(report.quantized)} linears + {len(report.experts)} expert backends quantised")
    print(f"    kept float: {kept}, the router, norms, embeddings; matmul paths {dict(paths)}")
    mlp_only = random_model(cfg, seed=SEED)
    quantize_model(mlp_only, skip=(*DEFAULT_SKIP, *ATTENTION))
    int8_mlp = _prefill_logits(mlp_only, prompts)
    print(f"  {'variant':<28} {'top-1 agreement':>16} {'KL(float||x) nats':>18}")
    rows = (("bf16", bf16), ("W8A8 all", int8), ("W8A8 MLP+experts, attn fp32", int8_mlp))
    for name, logits in rows:
        agree, kl = _compare(ref, logits)
        print(f"  {name:<28} {agree:>16.4f} {kl:>18.2e}")


def _time(fn, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def speed() -> None:
    print("speed: y = x W^T, 1 thread, median ms (speed-up vs fp32)")
    print(f"  CPU int8 dot-product instructions (VNNI/AMX): {cpu_has_int8_dot()}")
    cols = ("bf16", "_int_mm", "Int8Lin int_mm", "Int8Lin float")
    print(f"  {'M':>4} {'K':>5} {'N':>5} {'fp32':>9} " + " ".join(f"{c:>16}" for c in cols))
    g = torch.Generator().manual_seed(SEED)
    for k, n in ((1024, 1024), (2048, 4096), (7168, 2048)):
        w = torch.randn(n, k, generator=g) / k**0.5
        wb = w.bfloat16()
        lin = torch.nn.Linear(k, n, bias=False)
        with torch.no_grad():
            lin.weight.copy_(w)
        qlin = Int8Linear.from_float(lin)
        wq_t = qlin.weight_q.t()
        for m in (1, 16, 64, 256):
            x = torch.randn(m, k, generator=g)
            xb = x.bfloat16()
            xq, _ = quantize_per_token(x)
            reps = max(3, min(30, int(5e8 / (2 * m * k * n + 1e7))))
            with torch.inference_mode():
                t32 = _time(lambda: F.linear(x, w), reps)  # noqa: B023 - timed immediately
                t16 = _time(lambda: F.linear(xb, wb), reps)  # noqa: B023
                ti = _time(lambda: torch._int_mm(xq, wq_t), reps)  # noqa: B023
                set_int8_matmul_mode("int_mm")
                tq = _time(lambda: qlin(x), reps)  # noqa: B023
                set_int8_matmul_mode("float")
                tf = _time(lambda: qlin(x), reps)  # noqa: B023
                set_int8_matmul_mode("auto")
            cells = [f"{t * 1e3:8.3f} ({t32 / t:4.2f}x)" for t in (t16, ti, tq, tf)]
            print(f"  {m:>4} {k:>5} {n:>5} {t32 * 1e3:9.3f} " + " ".join(cells))
    print(f"  Int8Linear paths run: {dict(qlin.path_counts)}; auto mode takes {select_path(x.device, k, n)}")


def _ep_worker(rank: int, world: int) -> dict:
    h, i, e, k = 64, 32, 8, 3
    gen = torch.Generator().manual_seed(SEED)
    w = ExpertWeights(
        torch.randn(e, i, h, generator=gen),
        torch.randn(e, i, h, generator=gen),
        torch.randn(e, h, i, generator=gen),
    )
    smap = SlotMap.build(e, world)
    out = {}
    for int8 in (False, True):
        ep = ExpertParallelExperts.from_full(w, smap, dispatch_int8=int8)
        g = torch.Generator().manual_seed(100 + rank)
        x = torch.randn(256, h, generator=g)
        ids = torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(256)])
        wts = torch.rand(256, k, generator=g)
        ep(x, ids, wts)  # warm-up, then time 20 calls
        ep.stats.reset()
        for _ in range(20):
            ep(x, ids, wts)
        st = ep.stats
        ms = [t / st.calls * 1e3 for t in (st.dispatch_s, st.compute_s, st.combine_s)]
        out[int8] = (st.dispatch_bytes_per_token, st.combine_bytes_per_token, st.dispatch_rows / st.tokens, ms)
    return out


def ep_traffic() -> None:
    world = 2
    res = run_ranks(_ep_worker, world)
    print(f"ep: {world} gloo ranks, 256 tokens each, hidden 64, top-3 of 8 experts, fp32 model")
    head = f"  {'dispatch':<10} {'rows/token':>10} {'dispatch B/token':>17} {'combine B/token':>16}"
    print(head + f" {'row bytes':>10}   ms/call: dispatch compute combine (rank 0)")
    for int8 in (False, True):
        rows = statistics.mean(r[int8][2] for r in res)
        d = statistics.mean(r[int8][0] for r in res)
        c = statistics.mean(r[int8][1] for r in res)
        row = dispatch_row_bytes(64, 3, torch.float32, int8)
        ms = " ".join(f"{t:7.2f}" for t in res[0][int8][3])
        print(f"  {'int8' if int8 else 'fp32':<10} {rows:>10.2f} {d:>17.1f} {c:>16.1f} {row['total']:>10}   {ms}")
    for name, dt, q in (("bf16", torch.bfloat16, False), ("int8", torch.bfloat16, True)):
        row = dispatch_row_bytes(7168, 8, dt, q)
        print(f"  DeepSeek-V3 row (hidden 7168, top-8), {name} dispatch: {row}; bf16 combine row 14336 B")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=["all", "accuracy", "speed", "ep"], default="all")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread")
    if args.part in ("all", "accuracy"):
        accuracy()
    if args.part in ("all", "speed"):
        speed()
    if args.part in ("all", "ep"):
        ep_traffic()


if __name__ == "__main__":
    main()
