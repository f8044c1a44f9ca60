"""The twin predicts the engine: measured TTFT/TPOT of `cloudmatrix serve --single-process` vs `simulate`.

(a) benchmarks/host_microbench.py measures this CPU and writes its hardware pair to --out, and
    benchmarks/host_engine_ops.py the engine's serving profile (ops per layer counted in the engine's code,
    host seconds per op from a module-level microbenchmark) to --out/engine-backend.toml;
(b) the engine offline measures the workload's own properties the scenario needs (prompt and output
    token counts, MTP acceptance), then serve_load.py's closed loop runs against a
    `cloudmatrix serve --single-process` on 127.0.0.1 (stopped by pid at the end);
(c) run_scenario simulates the same deployment (one colocated instance of one die, the engine's
    batch and token budgets, MTP depth 1 at the measured acceptance) on the measured host system,
    with the same closed-loop workload, twice: with the engine's profile (eager, host and kernels serial on
    one core) and without (the twin's default profile, CloudMatrix-Infer's graphed decode, as before).
    Nothing end-to-end is fitted: (b)'s latencies are compared only.

    python benchmarks/twin_vs_engine.py                      # 32 requests, concurrency 8, 32 tokens
    python benchmarks/twin_vs_engine.py --requests 16 --concurrency 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import host_engine_ops  # noqa: E402
import host_microbench  # noqa: E402
import serve_load  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "src/cloudmatrix/engine/default_model"
# The twin's weight precisions are int8/fp8/fp4/bf16 (sim/scenario.py PrecisionSpec); the engine serves fp32.
TWIN_PRECISION = "bf16"


def workload_properties(n: int, concurrency: int, max_tokens: int) -> dict:
    """What the scenario must be told about the workload, measured on the engine itself (offline, same
    prompts, greedy): prompt and output token counts, MTP acceptance, and the engine's wall time per step
    with `concurrency` sequences in flight (a diagnostic for the gap, not an input to the twin)."""
    import torch

    from cloudmatrix.engine.runtime.engine import LLMEngine
    from cloudmatrix.engine.runtime.params import SamplingParams

    torch.set_num_threads(1)
    eng = LLMEngine(None)
    prompts = [serve_load.PROMPTS[i % len(serve_load.PROMPTS)] for i in range(n)]
    prompt_lens = [len(eng.encode(p)) for p in prompts]
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    eng.generate(prompts[:2], SamplingParams(max_tokens=4))  # warm-up
    s0 = eng.stats()
    t0 = time.perf_counter()
    outs = eng.generate(prompts[:concurrency], params)
    wall = time.perf_counter() - t0
    s1 = eng.stats()
    outs += eng.generate(prompts[concurrency:], params) if n > concurrency else []
    s2 = eng.stats()
    drafted, accepted = s2.mtp_drafted - s0.mtp_drafted, s2.mtp_accepted - s0.mtp_accepted
    return {
        "input_len": round(sum(prompt_lens) / n),
        "input_len_range": [min(prompt_lens), max(prompt_lens)],
        "output_len": round(sum(len(o.token_ids) for o in outs) / n),
        "mtp_acceptance": accepted / drafted if drafted else 0.0,
        "step_s_at_concurrency": wall / max(1, s1.steps - s0.steps),
        "steps_at_concurrency": s1.steps - s0.steps,
    }


def engine_decode_step(concurrency: int, max_tokens: int) -> dict:
    """One decode step of the engine with `concurrency` sequences in flight, prefills done: its wall time
    (median of 5 steps) and the torch ops it dispatches (counted on one more step). What the twin counts as
    kernels, the engine pays per op plus the Python between ops."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from cloudmatrix.engine.runtime.engine import LLMEngine
    from cloudmatrix.engine.runtime.params import SamplingParams

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    torch.set_num_threads(1)
    eng = LLMEngine(None)
    for i in range(concurrency):
        eng.add_request(f"d{i}", serve_load.PROMPTS[i % len(serve_load.PROMPTS)],
                        SamplingParams(max_tokens=max_tokens, ignore_eos=True))  # fmt: skip
    while eng.stats().prefill_tokens_computed < sum(len(eng.encode(p)) for p in serve_load.PROMPTS[:concurrency]):
        eng.step()
    # where the step's time goes: the runner (model forward, MTP draft/verify, sampling) vs the rest
    # (scheduler, block tables, detokenisation), by wrapping the runner's execute on this instance
    inner, runner_s = eng.runner.execute, []

    def timed_execute(*a, **kw):
        t0 = time.perf_counter()
        try:
            return inner(*a, **kw)
        finally:
            runner_s.append(time.perf_counter() - t0)

    eng.runner.execute = timed_execute
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        eng.step()
        times.append(time.perf_counter() - t0)
    eng.runner.execute = inner
    with Count():
        eng.step()
    return {"step_s": sorted(times)[2], "runner_s": sorted(runner_s)[2], "torch_ops": Count.n}


def twin_decode_step(system: Path, n: int, concurrency: int, props: dict, backend: Path | None = None) -> dict:
    """The twin's decode step for the same batch: its time, the kernels it counts and its host time."""
    from cloudmatrix.perf.decode import decode_step

    sc = scenario(system, n, concurrency, props, backend)
    model, pool = sc.resolve_model(), sc.colocated
    b = decode_step(model, sc.resolve_system(), sc.deployment(pool, model), concurrency,
                    props["input_len"] + props["output_len"] / 2)  # fmt: skip
    return {"step_s": b.step_time, "kernels": sum(r.runs for r in b.rows), "host_s": b.host_time}


def load_test(n: int, concurrency: int, max_tokens: int) -> dict:
    from tokenizers import Tokenizer

    ns = argparse.Namespace(model=MODEL, threads=1, start_timeout=180, requests=n, concurrency=concurrency,
                            max_tokens=max_tokens)  # fmt: skip
    return serve_load.run("cloudmatrix-1proc", ns, Tokenizer.from_file(str(MODEL / "tokenizer.json")))


def scenario(system: Path, n: int, concurrency: int, props: dict, backend: Path | None = None):
    """The `serve --single-process` deployment as the twin writes it (defaults of EngineConfig); `backend` is a
    serving profile's path (its host cost and its [scheduling], the engine's own loop)."""
    from cloudmatrix.engine.runtime.params import EngineConfig
    from cloudmatrix.sim.scenario import Scenario

    cfg = EngineConfig()
    pool = {"backend": str(backend)} if backend is not None else {}
    return Scenario.model_validate({
        "name": "serve-single-process",
        "description": "cloudmatrix serve --single-process on this host, default model, serve_load.py workload",
        "system": str(system),
        "model": str(MODEL / "config.json"),
        "mode": "colocated",
        # one engine, one thread: one die; continuous batching with chunked prefill, no microbatch overlap
        "colocated": {"instances": 1, "dies": 1, "ep": 1, "microbatches": 1,
                      "batch_per_die": cfg.max_num_seqs, "tokens_per_die": cfg.max_num_batched_tokens, **pool},
        "mtp": {"depth": 1, "acceptance": round(props["mtp_acceptance"], 4)},
        "precision": {"weights": TWIN_PRECISION, "kv_cache": "bf16"},
        "experts": {"popularity": "uniform", "placement": "none"},
        "kv_block_size": cfg.block_size,
        "workload": {"kind": "closed", "concurrency": concurrency, "num_requests": n,
                     "input_len": props["input_len"], "output_len": props["output_len"]},
    })  # fmt: skip


def predict(system: Path, n: int, concurrency: int, props: dict, backend: Path | None = None) -> dict:
    from cloudmatrix.sim.simulation import run_scenario

    s = run_scenario(scenario(system, n, concurrency, props, backend)).summary
    return {"ttft": s["ttft_s"]["p50"], "tpot": s["tpot_s"]["p50"], "ttft_components": s.get("ttft_components_s")}


def fp32_standin(out: Path, m: dict) -> Path:
    """Diagnostic only: a copy of the host pair whose bf16 entries carry the fp32 measurements, because the
    twin has no fp32 weight precision and the engine computes in fp32 (weights still counted at 2 bytes)."""
    m2 = json.loads(json.dumps(m))
    m2["gemm"]["bf16"] = m2["gemm"]["fp32"]
    d = out / "fp32-standin"
    system = host_microbench.write_pair(m2, d)
    chip = d / "host-cpu.toml"
    chip.write_text("# DIAGNOSTIC, not this CPU's bf16: the fp32 matmul figures under bf16 (the twin has no fp32).\n"
                    + chip.read_text())  # fmt: skip
    return system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--out", type=Path, default=ROOT / "out/host")
    args = ap.parse_args()
    n, c, k = args.requests, args.concurrency, args.max_tokens

    t0 = time.perf_counter()
    m = host_microbench.measure(MODEL)
    host_microbench.print_summary(m)
    system = host_microbench.write_pair(m, args.out)
    standin = fp32_standin(args.out, m)
    ops = host_engine_ops.measure()
    profile = args.out / "engine-backend.toml"
    profile.write_text(host_engine_ops.render_profile(ops))
    print(f"engine profile: host {ops['layers_timed']['per_op_s'] * 1e6:.2f} us per op (decoder layers at one "
          f"sequence; modules alone {ops['modules']['per_op_s'] * 1e6:.2f} us), written to {profile}")  # fmt: skip
    props = workload_properties(n, c, k)
    print(f"workload (engine, offline): {props}")
    measured = load_test(n, c, k)
    pred_host = predict(system, n, c, props, profile)
    pred = predict(system, n, c, props)
    pred32 = predict(standin, n, c, props, profile)
    eng_step = engine_decode_step(c, k)
    twin_step, twin_step0 = twin_decode_step(system, n, c, props, profile), twin_decode_step(system, n, c, props)

    print(f"\n{n} requests, concurrency {c}, max_tokens {k}; serve --single-process (fp32, 1 thread) vs the twin on "
          f"{system}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")  # fmt: skip
    print(f"{'':<34}{'TTFT p50 [ms]':>14}{'TPOT p50 [ms]':>14}")
    rows = [("measured (serve_load closed loop)", measured["ttft"]["p50"], measured["tpot"]["p50"]),
            (f"twin, {TWIN_PRECISION}, engine profile", pred_host["ttft"], pred_host["tpot"]),
            (f"twin, {TWIN_PRECISION}, no host model (before)", pred["ttft"], pred["tpot"]),
            ("twin, fp32 stand-in + profile (diag.)", pred32["ttft"], pred32["tpot"])]  # fmt: skip
    for name, a, b in rows:
        print(f"{name:<34}{a * 1e3:>14.2f}{b * 1e3:>14.2f}")
    mt, mp = measured["ttft"]["p50"], measured["tpot"]["p50"]
    for name, a, b in rows[1:]:
        print(f"error of {name}: TTFT {100 * (a / mt - 1):+.1f}%, TPOT {100 * (b / mp - 1):+.1f}%")
    per_op = ops["layers_timed"]["per_op_s"]
    print(f"decode step, {c} sequences: engine {eng_step['step_s'] * 1e3:.2f} ms, {eng_step['torch_ops']} torch ops "
          f"(x {per_op * 1e6:.2f} us per op = {eng_step['torch_ops'] * per_op * 1e3:.2f} ms), of which the "
          f"runner (forward, MTP, sampling) {eng_step['runner_s'] * 1e3:.2f} ms; twin with the engine profile "
          f"{twin_step['step_s'] * 1e3:.2f} ms (host {twin_step['host_s'] * 1e3:.2f} ms, {twin_step['kernels']} "
          f"kernels), without {twin_step0['step_s'] * 1e3:.2f} ms")  # fmt: skip
    print(
        "not expressible in the twin: fp32 weights (it knows int8/fp8/fp4/bf16; the engine serves fp32); a CPU "
        "has no separate matrix cores; the engine's Python outside its modules (not an op, so not counted)"
    )
    print(json.dumps({"measured": measured, "twin_engine_profile": pred_host, "twin_no_host": pred,
                      "twin_fp32_standin": pred32, "workload": props, "engine_ops": {k: v for k, v in ops.items()
                                                                                     if k != "counts"},
                      "decode_step": {"engine": eng_step, "twin": twin_step, "twin_no_host": twin_step0},
                      "wall_s": time.perf_counter() - t0}, indent=1, default=float))  # fmt: skip


if __name__ == "__main__":
    main()
