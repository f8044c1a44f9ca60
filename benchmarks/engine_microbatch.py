"""Microbatch pipelining of EP decode steps on CPU ranks: two microbatches (one's async dispatch/combine
overlapping the other's attention) vs the plain step, same ranks, same run.

    PYTHONPATH=src python benchmarks/engine_microbatch.py [--ranks 2] [--batch 16] [--context 128] [--steps 8]

Each rank holds `batch` sequences of `context` tokens (prefilled once) of a random DeepSeek-V3-architecture
model with EP over the ranks (gloo, one thread per rank). A decode step is timed on every rank, plain and
microbatched alternately (the cache is rolled back after each step, so every step sees the same
context); the figure is the median over steps of the slowest rank's step time. Both modes give the same
tokens (checked). The ratio is plain / microbatched: above 1 means microbatching pays.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist

from cloudmatrix.engine.loader import random_model
from cloudmatrix.engine.model.config import ModelConfig
from cloudmatrix.engine.parallel import SlotMap, run_ranks, use_expert_parallel
from cloudmatrix.engine.parallel.microbatch import microbatched_forward

CONFIG = dict(
    vocab_size=512, hidden_size=256, intermediate_size=512, moe_intermediate_size=256, num_hidden_layers=4,
    num_attention_heads=8, num_key_value_heads=8, n_routed_experts=16, n_shared_experts=1,
    num_experts_per_tok=4, n_group=4, topk_group=2, first_k_dense_replace=1, routed_scaling_factor=2.5,
    kv_lora_rank=64, q_lora_rank=96, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
    max_position_embeddings=2048, initializer_range=0.1, num_nextn_predict_layers=0,
)  # fmt: skip


def _rank(rank: int, world: int, batch: int, context: int, steps: int) -> dict:
    torch.set_num_threads(1)
    cfg = ModelConfig.from_dict(dict(CONFIG))
    model = random_model(cfg, seed=0)  # outside inference mode: MLA caches absorbed weights by version
    use_expert_parallel(model, SlotMap.build(cfg.n_routed_experts, world))
    with torch.inference_mode():
        return _timed(model, cfg, rank, batch, context, steps)


def _timed(model, cfg, rank: int, batch: int, context: int, steps: int) -> dict:
    bs = 16
    cache = model.new_cache(num_blocks=batch * (-(-(context + 2) // bs)), block_size=bs)
    seqs = [cache.add_sequence() for _ in range(batch)]
    g = torch.Generator().manual_seed(rank)
    prompts = torch.randint(0, cfg.vocab_size, (batch, context), generator=g)
    for s, p in zip(seqs, prompts, strict=True):  # prefill one sequence at a time (same count on every rank)
        model(p, cache.plan([s], [context]), cache)
    ids = torch.randint(0, cfg.vocab_size, (batch,), generator=g)
    half = batch // 2
    times: dict[str, list[float]] = {"plain": [], "micro": []}
    tokens = {}
    for step in range(steps + 1):  # step 0 warms up
        for mode in ("plain", "micro") if step % 2 else ("micro", "plain"):
            dist.barrier()
            t0 = time.perf_counter()
            if mode == "plain":
                h = model(ids, cache.plan(seqs, [1] * batch), cache)
            else:
                b0, b1 = cache.plan(seqs[:half], [1] * half), cache.plan(seqs[half:], [1] * (batch - half))
                h = torch.cat(microbatched_forward(model, [ids[:half], ids[half:]], [b0, b1], cache))
            tokens[mode] = model.logits(h).argmax(-1)
            dt = torch.tensor([time.perf_counter() - t0])
            dist.all_reduce(dt, op=dist.ReduceOp.MAX)  # the group's step ends with its slowest rank
            if step:
                times[mode].append(float(dt))
            for s in seqs:
                cache.set_len(s, context)
    return {"times": times, "same_tokens": bool(torch.equal(tokens["plain"], tokens["micro"]))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--context", type=int, default=128)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    res = run_ranks(_rank, args.ranks, args.batch, args.context, args.steps)
    plain = statistics.median(res[0]["times"]["plain"]) * 1e3
    micro = statistics.median(res[0]["times"]["micro"]) * 1e3
    print(
        f"{args.ranks} gloo ranks x 1 thread, {os.cpu_count()} CPUs visible; batch {args.batch} per rank, "
        f"context {args.context}, {args.steps} steps per mode"
    )
    print(f"plain step      {plain:8.2f} ms (median, slowest rank)")
    print(f"microbatched    {micro:8.2f} ms")
    print(f"plain / microbatched = {plain / micro:.2f}x; same tokens: {all(r['same_tokens'] for r in res)}")


if __name__ == "__main__":
    main()
