"""Measure this host's CPU the way the twin describes a chip, and write a hardware TOML pair for it.

One *die* of the written chip is one CPU core running one torch thread (the engine's workers each run
one thread): matmul FLOP/s per dtype at the default model's shapes (fp32, bf16), the per-launch cost
of a tiny op, single-thread copy bandwidth, and gloo all-to-all latency and bandwidth between two
processes on loopback (the EP group's transport). The system is one node of `nproc` such dies.

    python benchmarks/host_microbench.py --out out/host/     # writes host-cpu.toml + host-system.toml
    cloudmatrix simulate SCENARIO   # with system = "out/host/host-system.toml"

The files describe this machine at this moment (a shared, loaded machine measures lower): they are
not catalog products, so they go to out/, not into the catalog.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "src/cloudmatrix/engine/default_model"
ROWS = (1, 4, 16, 64, 256)  # GEMM rows swept at the model's (k, n): decode batches up to a prefill chunk


# ------------------------------------------------------------------ measurements (torch, 1 thread)


def _best_time(fn, min_s: float = 0.05, reps: int = 5) -> float:
    """Median over `reps` of the mean time per call, each rep running >= min_s (after one warm call)."""
    fn()
    n, t = 1, 0.0
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        t = time.perf_counter() - t0
        if t >= min_s / 4 or n > 1 << 20:
            break
        n *= 4
    n = max(1, int(n * (min_s / max(t, 1e-9))))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    return statistics.median(times)


def measure_gemm(hidden: int, inter: int) -> dict:
    """FLOP/s per dtype: a large square GEMM (the peak) and a row sweep at (k, n) = (hidden, intermediate)."""
    import torch

    out: dict = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        big = 1024
        a, b = torch.randn(big, big, dtype=dtype), torch.randn(big, big, dtype=dtype)
        t = _best_time(lambda a=a, b=b: torch.mm(a, b), min_s=0.2, reps=3)
        sweep = []
        w = torch.randn(hidden, inter, dtype=dtype)
        for m in ROWS:
            x = torch.randn(m, hidden, dtype=dtype)
            sweep.append({"m": m, "k": hidden, "n": inter, "s": _best_time(lambda x=x, w=w: torch.mm(x, w))})
        out[name] = {"peak_flops": 2 * big**3 / t, "peak_shape": big, "sweep": sweep}
    return out


def measure_launch() -> dict:
    """Per-call cost of ops too small to do work: what every kernel pays through the torch dispatcher."""
    import torch

    a, b = torch.randn(1, 8), torch.randn(8, 8)
    v = torch.randn(8)
    return {"gemm_s": _best_time(lambda: torch.mm(a, b)), "vector_s": _best_time(lambda: torch.add(v, v))}


def measure_copy(mib: int = 256) -> float:
    """Single-thread copy bandwidth (read + write bytes per second) of a tensor far larger than the caches."""
    import torch

    src = torch.empty(mib * 2**20, dtype=torch.uint8).fill_(1)
    dst = torch.empty_like(src)
    t = _best_time(lambda: dst.copy_(src), min_s=0.2, reps=3)
    return 2 * src.numel() / t


def _a2a_worker(rank: int, world: int, port: int, sizes: list[int], out_path: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=dt.timedelta(seconds=60))  # fmt: skip
    try:
        res = []
        for size in sizes:
            x = torch.empty(size // 4 * world, dtype=torch.float32)
            y = torch.empty_like(x)

            # the same call count on both ranks (an adaptive count would differ and deadlock the collective)
            iters = 100 if size <= 65536 else 10
            dist.all_to_all_single(y, x)
            times = []
            for _ in range(3):
                dist.barrier()
                t0 = time.perf_counter()
                for _ in range(iters):
                    dist.all_to_all_single(y, x)
                times.append((time.perf_counter() - t0) / iters)
            res.append({"bytes_to_peer": size, "s": statistics.median(times)})
        if rank == 0:
            Path(out_path).write_text(json.dumps(res))
    finally:
        dist.destroy_process_group()


def measure_all_to_all(sizes: tuple[int, ...] = (8, 4096, 1 << 20, 8 << 20), timeout: float = 120) -> dict:
    """gloo all_to_all_single between 2 spawned processes on 127.0.0.1: the fastest small message (<= 4 KiB) is the
    latency, the largest's bytes per peer over (time - latency) the one-way bandwidth per rank."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        out = str(Path(d) / "a2a.json")
        os.environ["OMP_NUM_THREADS"] = "1"
        ctx = mp.start_processes(_a2a_worker, args=(2, port, list(sizes), out), nprocs=2, join=False,
                                 start_method="spawn")  # fmt: skip
        deadline = time.monotonic() + timeout
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    p.kill()
                raise SystemExit(f"gloo all-to-all did not finish in {timeout:.0f} s")
        rows = json.loads(Path(out).read_text())
    lat = min(r["s"] for r in rows if r["bytes_to_peer"] <= 4096)  # small messages: the fixed cost (least noisy)
    big = rows[-1]
    return {"latency_s": lat, "bandwidth": big["bytes_to_peer"] / max(big["s"] - lat, 1e-9), "rows": rows}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def mem_total_bytes() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return float(line.split()[1]) * 1024
    raise SystemExit("no MemTotal in /proc/meminfo")


def measure(model_dir: Path = DEFAULT_MODEL) -> dict:
    """Everything the TOML writer needs, measured now with one torch thread."""
    import torch

    torch.set_num_threads(1)
    cfg = json.loads((model_dir / "config.json").read_text())
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 1,
        "mem_bytes": mem_total_bytes(),
        "torch": torch.__version__,
        "model": model_dir.name,
        "gemm": measure_gemm(cfg["hidden_size"], cfg["intermediate_size"]),
        "launch": measure_launch(),
        "copy_bandwidth": measure_copy(),
        "a2a": measure_all_to_all(),
        "load_avg": os.getloadavg()[0],
    }


# ------------------------------------------------------------------ fits and the TOML pair (no torch)


def fit_gemm(peak: float, sweep: list[dict], launch_s: float) -> dict:
    """The twin's GEMM curve from the row sweep: t(m) = latency + 2kn(m + half_rows) / (peak * eff), a line in m
    (perf/kernels.py's eff * m / (m + half_rows) form at fixed k, n). Least squares for slope and intercept;
    eff from the slope, half_rows from what the intercept has beyond the measured launch cost."""
    ms = [r["m"] for r in sweep]
    ts = [r["s"] for r in sweep]
    k, n = sweep[0]["k"], sweep[0]["n"]
    mean_m, mean_t = statistics.fmean(ms), statistics.fmean(ts)
    slope = sum((m - mean_m) * (t - mean_t) for m, t in zip(ms, ts, strict=True)) / sum((m - mean_m) ** 2 for m in ms)
    intercept = mean_t - slope * mean_m
    slope = max(slope, 1e-15)
    eff = min(1.0, 2 * k * n / (peak * slope))
    half_rows = max(0.0, (intercept - launch_s) / slope)
    return {"peak": eff, "half_rows": half_rows, "latency_s": launch_s}


def _flops(x: float) -> str:
    return f"{x / 1e9:.2f} GFLOPS"


def _us(x: float) -> str:
    return f"{x * 1e6:.2f} us"


def render_chip(m: dict, name: str = "host-cpu") -> str:
    g = m["gemm"]
    fits = {p: fit_gemm(g[p]["peak_flops"], g[p]["sweep"], m["launch"]["gemm_s"]) for p in ("fp32", "bf16")}
    b = fits["bf16"]
    sweep_note = "; ".join(
        f"{p} " + ", ".join(f"m={r['m']}: {2 * r['m'] * r['k'] * r['n'] / r['s'] / 1e9:.2f}" for r in g[p]["sweep"])
        for p in ("fp32", "bf16")
    )
    mem_per_die = m["mem_bytes"] / m["cores"]
    lines = [
        f"# {m['cpu']}: one core running one torch thread = one die (the engine's workers run one thread each).",
        f"# Measured by benchmarks/host_microbench.py on {m['date']} (torch {m['torch']}, 1-min load average",
        f"# {m['load_avg']:.2f} on {m['cores']} cores: a shared machine measures below an idle one).",
        "# Generated for this machine; not a catalog product.",
        f'name = "{name}"',
        'vendor = "host"',
        f'description = "{m["cpu"]}, one core (1 torch thread) per die"',
        "dies = 1",
        "",
        "[die]",
        f'hbm_capacity = "{mem_per_die / 1e9:.2f} GB"        # MemTotal / cores: each die\'s share of DRAM',
        f'hbm_bandwidth = "{m["copy_bandwidth"] / 1e9:.2f} GB/s"  # 1-thread copy of 256 MiB, read + write bytes',
        "",
        "[die.peak]",
        f'# torch.mm {g["bf16"]["peak_shape"]}^3, 1 thread. A CPU core has no separate matrix cores; whatever the',
        "# core uses for bf16 (AMX/AVX-512 where present, via oneDNN) is in this figure.",
        f'fp32 = "{_flops(g["fp32"]["peak_flops"])}"',
        f'bf16 = "{_flops(g["bf16"]["peak_flops"])}"',
        "",
        "[efficiency]",
        f"# GEMM row sweep at (k, n) = ({g['bf16']['sweep'][0]['k']}, {g['bf16']['sweep'][0]['n']}) "
        "(the default model's hidden, intermediate), GFLOP/s:",
        f"#   {sweep_note}",
        "# fitted as t = latency + 2kn(m + half_rows) / (peak * eff) (benchmarks/host_microbench.py::fit_gemm).",
        "# kernel_latency / vector_latency: a 1x8 @ 8x8 torch.mm and an 8-element torch.add, i.e. the torch",
        "# dispatcher's per-op cost, which on a CPU is most of a small kernel's time.",
        f'kernel_latency = "{_us(m["launch"]["gemm_s"])}"',
        f'vector_latency = "{_us(m["launch"]["vector_s"])}"',
        f"gemm = {b['peak']:.3f}",
        f"gemm_half_rows = {b['half_rows']:.1f}",
        "# Not measured separately: attention runs as plain torch matmuls and element-wise ops on a CPU, so it",
        "# takes the bf16 GEMM's fraction when compute-bound, the copy bandwidth when memory-bound, and the GEMM's",
        "# launch cost per kernel.",
        f"attention_compute = {b['peak']:.3f}",
        "attention_memory = 1.0",
        f'attention_latency = "{_us(m["launch"]["gemm_s"])}"',
        "memory = 1.0                               # hbm_bandwidth above is itself the measured copy rate",
    ]
    for p in ("fp32", "bf16"):
        f = fits[p]
        lines += [
            "",
            f"[efficiency.gemm_by_precision.{p}]",
            f"peak = {f['peak']:.3f}",
            f"half_rows = {f['half_rows']:.1f}",
            f'latency = "{_us(f["latency_s"])}"',
        ]
    return "\n".join(lines) + "\n"


def render_system(m: dict, chip_file: str = "host-cpu.toml", name: str = "host") -> str:
    a = m["a2a"]
    rows = ", ".join(f"{r['bytes_to_peer']} B: {_us(r['s'])}" for r in a["rows"])
    bw = f"{a['bandwidth'] / 1e9:.3f} GB/s"
    return "\n".join([  # fmt: skip
        f"# This host ({m['cpu']}, {m['cores']} cores) as one node of {m['cores']} one-core dies.",
        f"# Measured by benchmarks/host_microbench.py on {m['date']}; generated for this machine, not a product.",
        "# Fabric: torch.distributed gloo all_to_all_single between 2 spawned processes on 127.0.0.1, 1 thread each",
        f"#   (bytes sent to the peer: time) {rows}",
        "#   latency = the fastest message of <= 4 KiB; bandwidth = the largest's bytes over (time - latency).",
        f'name = "{name}"',
        f'description = "this host: {m["cores"]} x one-core dies, gloo over loopback"',
        f'chip = "{chip_file}"',
        "nodes = 1",
        f"chips_per_node = {m['cores']}",
        "# Not measured: the loader requires a power and a price; these placeholders make cost and power outputs",
        "# for this system meaningless (use it for latency and throughput only).",
        'power_per_node = "100 W"',
        "price_per_node_usd = 1.0",
        "",
        "[scale_up]",
        'name = "gloo loopback"',
        f'bandwidth_per_chip = "{bw}"',
        f'latency = "{_us(a["latency_s"])}"',
        f"domain_chips = {m['cores']}",
        "",
        "[scale_out]",
        "# One host has no scale-out network; the same loopback figures, never used by a one-node deployment.",
        'name = "none (loopback)"',
        f'bandwidth_per_chip = "{bw}"',
        f'latency = "{_us(a["latency_s"])}"',
        "",
        "[cpu_pool]",
        "# The caching pool lives in the same DRAM: read at the measured copy rate.",
        f'dram_per_node = "{m["mem_bytes"] / 1e9:.2f} GB"',
        f'read_bandwidth_per_die = "{m["copy_bandwidth"] / 1e9:.2f} GB/s"',
        'fabric = "host DRAM"',
    ]) + "\n"


def write_pair(m: dict, out: Path) -> Path:
    """Write host-cpu.toml and host-system.toml (plus the raw measurements) to `out`; return the system path."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "host-cpu.toml").write_text(render_chip(m))
    system = out / "host-system.toml"
    system.write_text(render_system(m))
    (out / "measurements.json").write_text(json.dumps(m, indent=1))
    return system


def print_summary(m: dict) -> None:
    g = m["gemm"]
    print(f"{m['cpu']}, {m['cores']} cores, load {m['load_avg']:.2f}, 1 torch thread")
    for p in ("fp32", "bf16"):
        print(f"  matmul {p}: {g[p]['peak_flops'] / 1e9:.1f} GFLOP/s ({g[p]['peak_shape']}^3)")
    print(f"  launch: mm {m['launch']['gemm_s'] * 1e6:.2f} us, add {m['launch']['vector_s'] * 1e6:.2f} us")
    print(f"  copy bandwidth: {m['copy_bandwidth'] / 1e9:.2f} GB/s")
    a = m["a2a"]
    print(f"  gloo all-to-all (2 procs): latency {a['latency_s'] * 1e6:.1f} us, "
          f"bandwidth {a['bandwidth'] / 1e9:.3f} GB/s")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "out/host")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    args = ap.parse_args()
    m = measure(args.model)
    print_summary(m)
    print(f"wrote {write_pair(m, args.out)}")


if __name__ == "__main__":
    main()
