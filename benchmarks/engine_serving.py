"""Offline serving throughput: our LLMEngine (continuous batching) vs transformers' own continuous
batching (`ContinuousBatchingManager`, transformers >= 5), same weights, one thread, one process.

    PYTHONPATH=src python benchmarks/engine_serving.py                        # 32 requests, ~5 min
    PYTHONPATH=src python benchmarks/engine_serving.py --requests 16 --repeat 1

The model is engine_decode.py's random DeepSeek-V3 (fp32, 8 layers, hidden 512, 32 routed experts)
with one change: kv_lora_rank = qk_rope_head_dim = qk_nope_head_dim = 64 (instead of 128 / 32 / 64).
transformers 5's paged cache stores K and V with one width per head, and its DeepSeek-V3 caches the
MLA latent (kv_lora_rank wide) as "K" and the rope key (qk_rope_head_dim wide) as "V" in one head,
so its continuous batching only runs when the two widths are equal (with 128 / 32 it fails in
`index_copy_`); `config.num_key_value_heads` is set to 1 while its manager sizes the cache (each
attention module keeps its own head count). Built by transformers and loaded into ours from its
state dict. N requests with mixed lengths (seeded: prompts uniform in
[--min-prompt, --max-prompt] tokens of random ids, outputs uniform in [--min-out, --max-out] new
tokens, EOS off so every request runs to its own length) are all submitted at t = 0; throughput
is generated tokens / wall time from the first submission to the last token. Both sides are greedy
and both run a token budget per step and a cap on concurrent sequences set to the same values
(--budget, --max-seqs). The generated tokens of both are compared (fp32 greedy: identical).

Ours: chunked prefill mixed with decode in one pass, paged latent KV, ragged absorbed MLA, the
prefix cache on (random prompts: no hits, it costs its bookkeeping). transformers: its paged
cache and "paged|eager" attention (eager is its fastest on this CPU at these shapes, see
engine_decode.py), prefix sharing on, its own scheduler thread.
Each side's best of --repeat runs (other load on the machine only ever adds time).
"""

from __future__ import annotations

import argparse
import time

import torch
from engine_decode import CONFIG as DECODE_CONFIG

from cloudmatrix.engine.loader import load_tensors
from cloudmatrix.engine.model.config import ModelConfig
from cloudmatrix.engine.runtime import EngineConfig, LLMEngine, SamplingParams

# equal latent and rope widths: the shape transformers' paged cache can hold (see the docstring)
CONFIG = dict(DECODE_CONFIG, kv_lora_rank=64, qk_rope_head_dim=64, qk_nope_head_dim=64)


def build(attn: str):
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    torch.manual_seed(0)
    hf_config = DeepseekV3Config(**CONFIG)
    hf_config._attn_implementation = attn
    hf = DeepseekV3ForCausalLM(hf_config).eval()
    return hf, load_tensors(ModelConfig.from_dict(hf_config.to_dict()), hf.state_dict())


def workload(n: int, args) -> list[tuple[list[int], int]]:
    g = torch.Generator().manual_seed(n)
    plens = torch.randint(args.min_prompt, args.max_prompt + 1, (n,), generator=g).tolist()
    olens = torch.randint(args.min_out, args.max_out + 1, (n,), generator=g).tolist()
    vocab = CONFIG["vocab_size"]
    return [(torch.randint(1, vocab, (p,), generator=g).tolist(), o) for p, o in zip(plens, olens, strict=True)]


def run_ours(model, reqs, args) -> tuple[float, list[list[int]], dict]:
    tokens = sum(len(p) + o for p, o in reqs)
    cfg = EngineConfig(
        kv_cache_tokens=tokens + 64 * len(reqs), max_num_seqs=args.max_seqs, max_num_batched_tokens=args.budget,
        speculative=False,
    )  # fmt: skip
    engine = LLMEngine.from_model(model, config=cfg)
    out: dict[str, list[int]] = {}
    start = time.perf_counter()
    for i, (p, o) in enumerate(reqs):
        engine.add_request(str(i), p, SamplingParams(max_tokens=o))
    while engine.has_unfinished():
        for r in engine.step():
            out.setdefault(r.request_id, []).extend(r.new_token_ids)
    dt = time.perf_counter() - start
    s = engine.stats()
    return dt, [out[str(i)] for i in range(len(reqs))], {"steps": s.steps}


def run_hf(hf, reqs, args) -> tuple[float, list[list[int]], dict]:
    from transformers import ContinuousBatchingConfig, GenerationConfig

    gen = GenerationConfig(do_sample=False, eos_token_id=None, pad_token_id=0, max_new_tokens=args.max_out)
    cb = ContinuousBatchingConfig(
        page_size=16, num_blocks=sum(-(-(len(p) + o) // 16) + 1 for p, o in reqs) + 8,
        max_batch_tokens=args.budget, max_requests_per_batch=args.max_seqs, use_cuda_graph=False,
        use_async_batching=False, auto_switch_to_flash=False,
    )  # fmt: skip
    heads = hf.config.num_key_value_heads
    hf.config.num_key_value_heads = 1  # MLA caches one latent "head" per token (see the docstring)
    manager = hf.init_continuous_batching(generation_config=gen, continuous_batching_config=cb)
    manager.start()
    try:
        start = time.perf_counter()
        ids = [manager.add_request(p, request_id=str(i), max_new_tokens=o) for i, (p, o) in enumerate(reqs)]
        results = {}
        while len(results) < len(reqs):
            r = manager.get_result(timeout=600)
            if r is None:
                raise RuntimeError("transformers' continuous batching stopped without a result")
            if r.is_finished():
                results[r.request_id] = r.generated_tokens
        dt = time.perf_counter() - start
    finally:
        manager.stop(block=True)
        hf.config.num_key_value_heads = heads
        if hasattr(hf, "destroy_cached_continuous_batching_manager"):
            hf.destroy_cached_continuous_batching_manager()
    out = [list(results[i]) for i in ids]
    if [len(t) for t in out] != [o for _, o in reqs]:
        raise RuntimeError("transformers' continuous batching returned incomplete outputs (see its log above)")
    return dt, out, {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--min-prompt", type=int, default=16)
    ap.add_argument("--max-prompt", type=int, default=384)
    ap.add_argument("--min-out", type=int, default=8)
    ap.add_argument("--max-out", type=int, default=64)
    ap.add_argument("--max-seqs", type=int, default=16, help="concurrent sequences (both sides)")
    ap.add_argument("--budget", type=int, default=512, help="tokens per step (both sides)")
    ap.add_argument("--attn", choices=["eager", "sdpa"], default="eager", help="transformers attention")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per side; the best is kept")
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    hf, ours = build(args.attn)
    reqs = workload(args.requests, args)
    new = sum(o for _, o in reqs)
    print(f"model: {sum(p.numel() for p in hf.parameters()) / 1e6:.1f}M parameters, fp32, 1 thread; "
          f"{len(reqs)} requests, prompts {args.min_prompt}-{args.max_prompt} tokens "
          f"(total {sum(len(p) for p, _ in reqs)}), outputs {args.min_out}-{args.max_out} (total {new}); "
          f"max {args.max_seqs} sequences, {args.budget} tokens per step")  # fmt: skip
    run_ours(ours, reqs[:2], args)  # warm-up
    best = {"ours": float("inf"), "hf": float("inf")}
    outs: dict[str, list[list[int]]] = {}
    for _ in range(args.repeat):
        sides = [("ours", lambda: run_ours(ours, reqs, args))]
        if not args.skip_hf:
            sides.append(("hf", lambda: run_hf(hf, reqs, args)))
        for side, fn in sides:
            dt, outs[side], extra = fn()
            best[side] = min(best[side], dt)
            print(f"  {side}: {dt:.1f} s, {new / dt:.1f} generated tok/s {extra or ''}", flush=True)
    print()
    print("| side | wall s | generated tok/s | ratio | same tokens |")
    print("|---|---:|---:|---:|:---:|")
    same = "-"
    if not args.skip_hf:
        same = sum(a == b for a, b in zip(outs["ours"], outs["hf"], strict=True))
        same = "yes" if same == len(reqs) else f"{same}/{len(reqs)}"
    ours_tps = new / best["ours"]
    print(f"| ours (continuous batching) | {best['ours']:.1f} | {ours_tps:.1f} | - | {same} |")
    if not args.skip_hf:
        hf_tps = new / best["hf"]
        print(f"| transformers ContinuousBatchingManager | {best['hf']:.1f} | {hf_tps:.1f} | "
              f"{ours_tps / hf_tps:.2f}x | {same} |")  # fmt: skip


if __name__ == "__main__":
    main()
