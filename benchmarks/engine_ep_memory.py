"""Peak host memory of an EP rank that loads only its own experts vs one that loads every expert.

    PYTHONPATH=src python benchmarks/engine_ep_memory.py [--ranks 2] [--experts 32]

Writes a random DeepSeek-V3-architecture checkpoint (safetensors, DeepSeek's one-tensor-per-expert
layout) whose routed experts dominate its size, then spawns the EP group twice (one thread per rank):
- baseline "load all": load_model(path), then use_expert_parallel keeps this rank's slots (the old way);
- "own experts": load_model(path, placement=...) reads only this rank's experts from the files.
Per rank it prints peak RSS (VmHWM, reset when the rank starts) after loading, the RSS the load added over the process
baseline (torch imported, process group up), and the bytes the model holds.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from cloudmatrix.engine.loader import load_model, random_state
from cloudmatrix.engine.model.config import ModelConfig
from cloudmatrix.engine.parallel import SlotMap, run_ranks, use_expert_parallel

CONFIG = dict(
    vocab_size=512, hidden_size=256, intermediate_size=512, moe_intermediate_size=512, num_hidden_layers=4,
    num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, num_experts_per_tok=4, n_group=4,
    topk_group=2, first_k_dense_replace=1, kv_lora_rank=64, q_lora_rank=96, qk_nope_head_dim=32,
    qk_rope_head_dim=16, v_head_dim=32, max_position_embeddings=1024, initializer_range=0.1,
    num_nextn_predict_layers=0,
)  # fmt: skip


def _reset_peak() -> None:
    # ru_maxrss survives fork + exec (a spawned rank would inherit the parent's peak); Linux resets
    # the VmHWM high-water mark when 5 is written to clear_refs.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024  # KiB


def _peak_mib() -> float:
    try:
        return _status_mib("VmHWM")
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rank(rank: int, world: int, folder: str, mode: str, experts: int) -> dict:
    torch.set_num_threads(1)
    _reset_peak()
    before = _peak_mib()
    smap = SlotMap.build(experts, world)
    if mode == "all":
        model = load_model(folder)
        use_expert_parallel(model, smap)
    else:
        model = load_model(folder, placement=smap)
    held = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    anon, file = _status_mib("RssAnon"), _status_mib("RssFile")  # private copies vs mapped checkpoint pages
    return {"before": before, "peak": _peak_mib(), "held_mib": held / 2**20, "anon": anon, "file": file}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--experts", type=int, default=32)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg_d = {**CONFIG, "n_routed_experts": args.experts}
    cfg = ModelConfig.from_dict(cfg_d)
    with tempfile.TemporaryDirectory(prefix="cm-ep-mem-") as tmp:
        folder = Path(tmp)
        tensors = random_state(cfg, seed=0)
        for name in [n for n in tensors if n.endswith("experts.gate_up_proj")]:
            prefix = name.removesuffix(".gate_up_proj")
            gate, up = tensors.pop(name).chunk(2, dim=1)
            down = tensors.pop(f"{prefix}.down_proj")
            for e in range(args.experts):
                tensors[f"{prefix}.{e}.gate_proj.weight"] = gate[e].clone()
                tensors[f"{prefix}.{e}.up_proj.weight"] = up[e].clone()
                tensors[f"{prefix}.{e}.down_proj.weight"] = down[e].clone()
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
        (folder / "config.json").write_text(json.dumps(cfg_d))
        size = (folder / "model.safetensors").stat().st_size / 2**20
        del tensors
        print(f"checkpoint {size:.1f} MiB, {args.experts} experts x 3 MoE layers, {args.ranks} ranks (fp32)")
        rows = {m: run_ranks(_rank, args.ranks, str(folder), m, args.experts) for m in ("all", "own")}
    print(
        f"{'mode':<14}{'rank':>5}{'peak RSS MiB':>14}{'added by load':>15}{'model holds MiB':>17}"
        f"{'RssAnon after':>15}{'RssFile after':>15}"
    )
    for mode, label in (("all", "load all"), ("own", "own experts")):
        for r, row in enumerate(rows[mode]):
            added = row["peak"] - row["before"]
            print(
                f"{label:<14}{r:>5}{row['peak']:>14.1f}{added:>15.1f}{row['held_mib']:>17.1f}"
                f"{row['anon']:>15.1f}{row['file']:>15.1f}"
            )
    for r in range(args.ranks):
        a, o = rows["all"][r], rows["own"][r]
        print(
            f"rank {r}: own-experts / load-all  peak RSS {o['peak'] / a['peak']:.2f}x, "
            f"load-added RSS {(o['peak'] - o['before']) / (a['peak'] - a['before']):.2f}x"
        )


if __name__ == "__main__":
    main()
