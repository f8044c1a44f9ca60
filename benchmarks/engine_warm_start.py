"""Cold vs warm start of a worker process: weights read from the safetensors files vs assembled from
tensors the front process already holds in shared memory (the caching of model weights that lets a
restarted worker start warm).

    PYTHONPATH=src python benchmarks/engine_warm_start.py [--experts 16] [--repeats 3]

Each start spawns a fresh process (spawn, one thread) that builds the model and answers "ready";
reported: the model-building part inside the worker (after torch's one-time lazy init, shown
apart), and spawn-to-ready as the parent sees it (the
spawn itself, i.e. starting Python and importing torch, is the same in both). Cold and warm alternate;
medians of `repeats`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
from safetensors.torch import save_file

from cloudmatrix.engine.disagg.shared_weights import model_from_shared, share_model
from cloudmatrix.engine.loader import load_model, random_state
from cloudmatrix.engine.model.config import ModelConfig

CONFIG = dict(
    vocab_size=512, hidden_size=256, intermediate_size=512, moe_intermediate_size=512, num_hidden_layers=4,
    num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, num_experts_per_tok=4, n_group=4,
    topk_group=2, first_k_dense_replace=1, kv_lora_rank=64, q_lora_rank=96, qk_nope_head_dim=32,
    qk_rope_head_dim=16, v_head_dim=32, max_position_embeddings=1024, initializer_range=0.1,
    num_nextn_predict_layers=0,
)  # fmt: skip


def _worker(out, mode: str, folder: str, config, state) -> None:
    torch.set_num_threads(1)
    # torch's one-time lazy initialisation in a fresh process (~2-3 s here, the same for both modes) is
    # paid first on a throw-away meta-device shell, so the timed part is only the weights.
    t_init = time.perf_counter()
    model_from_shared(config, {k: torch.empty_like(v, device="meta") for k, v in state.items()})
    init_s = time.perf_counter() - t_init
    t0 = time.perf_counter()
    model = load_model(folder) if mode == "cold" else model_from_shared(config, state)
    n = sum(t.numel() for t in model.state_dict().values())
    out.put((mode, time.perf_counter() - t0, n, init_s))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experts", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg_d = {**CONFIG, "n_routed_experts": args.experts}
    with tempfile.TemporaryDirectory(prefix="cm-warm-") as tmp:
        folder = Path(tmp)
        save_file(random_state(ModelConfig.from_dict(cfg_d), seed=0), folder / "model.safetensors")
        (folder / "config.json").write_text(json.dumps(cfg_d))
        size = (folder / "model.safetensors").stat().st_size / 2**20
        model = load_model(folder)
        state = share_model(model)
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        res: dict[str, list[tuple[float, float]]] = {"cold": [], "warm": []}
        for i in range(args.repeats):
            for mode in ("cold", "warm") if i % 2 == 0 else ("warm", "cold"):
                t0 = time.perf_counter()
                p = ctx.Process(target=_worker, args=(q, mode, str(folder), model.config, state))
                p.start()
                _, build_s, n, init_s = q.get(timeout=120)
                res[mode].append((build_s, time.perf_counter() - t0))
                p.join(timeout=30)
    print(f"checkpoint {size:.1f} MiB fp32 ({n / 1e6:.1f} M values), {args.repeats} starts per mode, 1 thread")
    print(f"torch lazy init in a fresh worker (both modes, not in 'build'): {init_s * 1e3:.0f} ms (last start)")
    med = {m: (statistics.median(b for b, _ in v), statistics.median(t for _, t in v)) for m, v in res.items()}
    for m in ("cold", "warm"):
        print(f"{m:<5} build model {med[m][0] * 1e3:8.1f} ms   spawn-to-ready {med[m][1] * 1e3:8.1f} ms")
    build, ready = med["cold"][0] / med["warm"][0], med["cold"][1] / med["warm"][1]
    print(f"cold / warm: build {build:.1f}x, spawn-to-ready {ready:.2f}x")


if __name__ == "__main__":
    main()
