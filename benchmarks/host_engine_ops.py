"""Count the torch ops our eager engine dispatches per decoder layer and per step, and time them on this host.

The twin costs an eager step's host time as (ops per layer x layers + ops per step) x host seconds per op
(src/cloudmatrix/perf/host.py). For `cloudmatrix serve --single-process` both come from here:

- ops: every aten op the engine dispatches, counted with a `TorchDispatchMode`, bucketed by the module that
  runs it (a main MoE / dense decoder layer, the MTP module, everything else in the step: embedding, rotary
  tables, final norm, LM head, sampling, the attention batch's index tensors). A MoE layer's count is
  linear in the distinct experts its tokens hit (LocalExperts loops over them): fitted as a + b x hit over
  the observed layers (exact: the fit's residual is printed).
- host seconds per op, a layer-level measurement: each main decoder layer's forward timed by module hooks
  during decode steps at one sequence (its arithmetic there is ~1% of its time), over the aten ops it
  issues. Two diagnostics are printed beside it, never used: a module-level microbenchmark (the engine's
  RMSNorm, MLP and router alone at one token: no Python between modules, a lower bound) and the whole
  decode step's wall time over its ops (a step-level figure of the engine the twin predicts).

    python benchmarks/host_engine_ops.py                       # prints the counts and writes nothing
    python benchmarks/host_engine_ops.py --out out/host/       # + out/host/engine-backend.toml (a profile)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from host_microbench import cpu_model  # noqa: E402  (the sibling benchmark names this host's CPU)

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [f"The quick brown fox {i} jumps over the lazy dog and keeps running" for i in range(16)]


class _Counter:
    """Aten ops by bucket; `bucket` is set by module hooks, ops outside any hooked module go to "head"."""

    def __init__(self):
        self.ops: dict[str, int] = {}
        self.bucket = "head"
        self.moe_calls: list[tuple[int, int]] = []  # (ops of one MoE layer, distinct experts it hit)
        self._layer_start = 0
        self._hit = 0

    def add(self) -> None:
        self.ops[self.bucket] = self.ops.get(self.bucket, 0) + 1

    def total(self) -> int:
        return sum(self.ops.values())


def _instrument(model, counter: _Counter):
    """Hooks that set the counter's bucket around each decoder layer and the MTP module; returns their handles."""
    handles = []

    def enter(name):
        def hook(module, args):
            counter.bucket = name
            counter._layer_start = counter.ops.get(name, 0)
            counter._hit = 0

        return hook

    def leave(name):
        def hook(module, args, out):
            if name == "moe_layer":
                counter.moe_calls.append((counter.ops.get(name, 0) - counter._layer_start, counter._hit))
            counter.bucket = "head"

        return hook

    def experts_hit(module, args):
        counter._hit = int(args[1].unique().numel()) if args[1].numel() else 0

    for layer in model.layers:
        name = "moe_layer" if hasattr(layer.mlp, "experts") else "dense_layer"
        handles.append(layer.register_forward_pre_hook(enter(name)))
        handles.append(layer.register_forward_hook(leave(name)))
        if hasattr(layer.mlp, "experts") and hasattr(layer.mlp.experts, "register_forward_pre_hook"):
            handles.append(layer.mlp.experts.register_forward_pre_hook(experts_hit))
    for mtp in model.mtp:  # forward_mtp calls forward directly, so wrap it
        inner = mtp.forward_mtp

        def wrapped(*a, _inner=inner, **kw):
            prev, counter.bucket = counter.bucket, "mtp_layer"
            try:
                return _inner(*a, **kw)
            finally:
                counter.bucket = prev

        mtp.forward_mtp = wrapped
    return handles


def _engine(concurrency: int, max_tokens: int):
    import torch

    from cloudmatrix.engine.runtime.engine import LLMEngine
    from cloudmatrix.engine.runtime.params import SamplingParams

    torch.set_num_threads(1)
    eng = LLMEngine(None)
    for i in range(concurrency):
        eng.add_request(f"r{i}", PROMPTS[i % len(PROMPTS)], SamplingParams(max_tokens=max_tokens, ignore_eos=True))
    return eng


def count_steps(concurrency: int, steps: int = 3) -> dict:
    """Ops of the first (prefill) step and of `steps` decode steps at `concurrency` sequences, by bucket."""
    from torch.utils._python_dispatch import TorchDispatchMode

    counter = _Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            counter.add()
            return func(*args, **(kwargs or {}))

    eng = _engine(concurrency, 4 * steps + 16)
    model = eng.runner.model
    handles = _instrument(model, counter)
    out = {}
    try:
        for phase, n in (("prefill", 1), ("decode", steps)):
            counter.ops, counter.moe_calls = {}, []
            with Count():
                for _ in range(n):
                    eng.step()
            out[phase] = {"ops": {k: v / n for k, v in counter.ops.items()}, "moe_calls": list(counter.moe_calls),
                          "steps": n}  # fmt: skip
    finally:
        for h in handles:
            h.remove()
    cfg = model.config
    out["layers"] = {"moe": sum(1 for layer in model.layers if hasattr(layer.mlp, "experts")),
                     "all": len(model.layers), "mtp": len(model.mtp), "experts": cfg.n_routed_experts}  # fmt: skip
    return out


def time_decode_step(concurrency: int, steps: int = 7) -> float:
    """Median wall seconds of a decode step at `concurrency` sequences (prefill done, no counting mode)."""
    eng = _engine(concurrency, 4 * steps + 16)
    eng.step()  # the prefill
    eng.step()  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        eng.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _best_time(fn, reps: int = 5, min_s: float = 0.05) -> float:
    """Median over `reps` of the mean seconds per call, each rep running >= min_s (after warm calls)."""
    for _ in range(3):
        fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_s / 4:
        fn()
        n += 1
    n = max(1, 4 * n)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    return statistics.median(times)


def measure_module_dispatch() -> dict:
    """Host seconds per aten op of the engine's small modules at one token (no step, no scheduler)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from cloudmatrix.engine.model.config import ModelConfig
    from cloudmatrix.engine.model.mlp import MLP
    from cloudmatrix.engine.model.moe import Router
    from cloudmatrix.engine.model.norm import RMSNorm

    torch.set_num_threads(1)
    cfg = ModelConfig.from_json(ROOT / "src/cloudmatrix/engine/default_model/config.json")
    H = cfg.hidden_size
    mods = {"rmsnorm": RMSNorm(H, cfg.rms_norm_eps), "mlp": MLP(H, cfg.intermediate_size), "router": Router(cfg)}
    with torch.no_grad():
        mods["router"].weight.normal_()
    x = torch.randn(1, H)
    seen = [0]

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen[0] += 1
            return func(*args, **(kwargs or {}))

    out = {}
    for name, mod in mods.items():
        seen[0] = 0
        with torch.inference_mode():
            with Count():
                mod(x)
            t = _best_time(lambda m=mod: m(x))
        out[name] = {"ops": seen[0], "s": t}
    ops, s = sum(v["ops"] for v in out.values()), sum(v["s"] for v in out.values())
    return {"modules": out, "ops": ops, "s": s, "per_op_s": s / ops}


def time_layers(concurrency: int = 1, steps: int = 9) -> dict:
    """Layer-level host cost: the median wall time of each main decoder layer's forward during decode steps at
    `concurrency` sequences (module hooks, no counting mode), against the aten ops that layer issues (counted
    the same way). At one sequence the layer's arithmetic is a few microseconds of its hundreds: the rest is
    the host issuing the layer's ops, the Python between them included.

    Also the runtime's own time per step outside the model: the step's wall time less the model's forward and
    the MTP module's (scheduler, block tables, the attention batch, sampling, detokenisation), less what its
    aten ops cost at the layers' rate: the engine's measured `step_overhead`."""
    from torch.utils._python_dispatch import TorchDispatchMode

    eng = _engine(concurrency, 4 * steps + 16)  # MTP may add two tokens a step: never run out
    eng.step()  # the prefill
    eng.step()  # warm-up
    model = eng.runner.model
    spans: dict[int, list[float]] = {i: [] for i in range(len(model.layers))}
    ops: dict[int, int] = {i: 0 for i in range(len(model.layers))}
    handles, start, counting, current = [], [0.0], [False], [-1]
    inside = {"s": 0.0, "ops": 0, "depth": 0}

    def pre(i):
        def hook(module, args):
            current[0] = i
            start[0] = time.perf_counter()

        return hook

    def post(i):
        def hook(module, args, out):
            if not counting[0]:
                spans[i].append(time.perf_counter() - start[0])
            current[0] = -1

        return hook

    def timed(fn):
        def run(*a, **kw):
            t0 = time.perf_counter()
            inside["depth"] += 1
            try:
                return fn(*a, **kw)
            finally:
                inside["depth"] -= 1
                inside["s"] += time.perf_counter() - t0

        return run

    for i, layer in enumerate(model.layers):
        handles += [layer.register_forward_pre_hook(pre(i)), layer.register_forward_hook(post(i))]
    forward, forward_mtp = model.forward, model.forward_mtp
    model.forward, model.forward_mtp = timed(forward), timed(forward_mtp)

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if current[0] >= 0:
                ops[current[0]] += 1
            if inside["depth"] == 0:
                inside["ops"] += 1
            return func(*args, **(kwargs or {}))

    outside = []
    try:
        for _ in range(steps):
            inside["s"] = 0.0
            t0 = time.perf_counter()
            eng.step()
            outside.append(time.perf_counter() - t0 - inside["s"])
        counting[0] = True
        with Count():
            eng.step()
    finally:
        for h in handles:
            h.remove()
        model.forward, model.forward_mtp = forward, forward_mtp
    layer_s = {i: statistics.median(v) for i, v in spans.items()}
    per_op = sum(layer_s.values()) / sum(ops.values())
    out_s = statistics.median(outside)
    return {"concurrency": concurrency, "layer_s": layer_s, "layer_ops": ops, "per_op_s": per_op,
            "outside_model_s": out_s, "outside_model_ops": inside["ops"],
            "step_overhead_s": out_s - inside["ops"] * per_op}  # fmt: skip


def fit_linear(rows: list[tuple[float, ...]]) -> tuple[list[float], float]:
    """Least squares y = c0 + c1 x1 + ... over rows (y, x1, ...): (coefficients, max |residual|)."""
    import numpy as np

    a = np.array(rows, dtype=float)
    x = np.column_stack([np.ones(len(a)), a[:, 1:]])
    coef, *_ = np.linalg.lstsq(x, a[:, 0], rcond=None)
    return [float(c) for c in coef], float(np.max(np.abs(x @ coef - a[:, 0])))


def measure(concurrencies: tuple[int, ...] = (1, 8)) -> dict:
    """Counts at each concurrency, the per-phase fits, and the host seconds per op at the smallest one."""
    import torch

    counts = {c: count_steps(c) for c in concurrencies}
    layers = counts[concurrencies[0]]["layers"]
    fits = {}
    for phase in ("prefill", "decode"):
        # a MoE layer: fixed + per expert hit + per sequence in the step
        moe_rows = [(ops, hit, c) for c, cnt in counts.items() for ops, hit in cnt[phase]["moe_calls"]]
        (fixed, per_hit, per_seq), resid = fit_linear(moe_rows)
        mean_hit = {c: sum(h for _, h in cnt[phase]["moe_calls"]) / len(cnt[phase]["moe_calls"])
                    for c, cnt in counts.items()}  # fmt: skip
        per_bucket = {}
        for bucket, n in (("dense_layer", layers["all"] - layers["moe"]), ("mtp_layer", layers["mtp"]), ("head", 1)):
            rows = []
            for c, cnt in counts.items():
                ops = cnt[phase]["ops"].get(bucket, 0.0) / max(1, n)
                if bucket == "mtp_layer":  # the MTP module's MoE block hits experts like a main layer
                    ops -= per_hit * mean_hit[c]
                rows.append((ops, c))
            (b0, b1), r = fit_linear(rows)
            per_bucket[bucket] = {"fixed": b0, "per_seq": b1, "max_residual": r}
        fits[phase] = {"moe_layer": {"fixed": fixed, "per_seq": per_seq, "max_residual": resid},
                       "per_expert_hit": per_hit, **per_bucket}  # fmt: skip
    c1 = min(concurrencies)
    step_s = time_decode_step(c1)
    ops_step = sum(counts[c1]["decode"]["ops"].values())
    modules = measure_module_dispatch()
    layers = time_layers(c1)
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "load_avg": os.getloadavg()[0],
        "counts": counts,
        "fits": fits,
        "modules": modules,
        "layers_timed": layers,
        "step_diagnostic": {"concurrency": c1, "step_s": step_s, "ops": ops_step, "per_op_s": step_s / ops_step},
    }


def render_profile(m: dict) -> str:
    """A backend profile (src/cloudmatrix/specs/backend.py's format) for the engine as measured here."""
    mod, diag, lay = m["modules"], m["step_diagnostic"], m["layers_timed"]
    lines = [
        "# The eager engine (cloudmatrix serve --single-process) on THIS host, as measured by",
        "# benchmarks/host_engine_ops.py; generated, not a catalog product.",
        f"# {m['date']}, {m['cpu']}, torch {m['torch']}, load average {m['load_avg']:.2f}",
        'name = "engine"',
        'description = "the eager PyTorch engine on a CPU: host and kernels on the same core"',
        'overlap = "serial"',
        "",
        "[phases]",
        'decode = "eager"',
        'prefill = "eager"',
        "",
        "[host]",
        f"# main decoder layers' forwards in decode steps at {lay['concurrency']} sequence(s), median wall: "
        + ", ".join(f"{lay['layer_s'][i] * 1e6:.0f} us / {lay['layer_ops'][i]} ops" for i in sorted(lay["layer_s"])),
        f"# (diagnostics, not used: the RMSNorm, MLP and router modules alone {mod['per_op_s'] * 1e6:.2f} us per op;"
        f" a whole decode step at {diag['concurrency']} sequence(s) {diag['step_s'] * 1e3:.2f} ms for "
        f"{diag['ops']:.0f} ops, {diag['per_op_s'] * 1e6:.2f} us per op)",
        f'per_op = "{lay["per_op_s"] * 1e6:.3f} us"',
        'graph_launch = "0 us"',
        f"# a decode step's wall time outside the model's and the MTP module's forwards, median "
        f"{lay['outside_model_s'] * 1e3:.3f} ms, less its {lay['outside_model_ops']} aten ops at per_op",
        f'step_overhead = "{lay["step_overhead_s"] * 1e6:.1f} us"',
        "",
    ]
    for phase in ("prefill", "decode"):
        f = m["fits"][phase]
        lines += [f"[ops.{phase}]", "# aten ops counted with a TorchDispatchMode at concurrency "
                  f"{', '.join(map(str, m['counts']))}; fit residuals (ops): "
                  + ", ".join(f"{k} {f[k]['max_residual']:.1f}" for k in ("moe_layer", "dense_layer", "mtp_layer",
                                                                          "head"))]  # fmt: skip
        lines += [f"{k} = {f[k]['fixed']:.1f}" for k in ("moe_layer", "dense_layer", "mtp_layer", "head")]
        lines += [f"per_expert_hit = {f['per_expert_hit']:.2f}"]
        lines += [f"[ops.{phase}.per_seq]"]
        lines += [f"{k} = {max(0.0, f[k]['per_seq']):.2f}" for k in ("moe_layer", "dense_layer", "mtp_layer", "head")]
        lines += [""]
    return "\n".join(lines) + _shipped_schedule()


def _shipped_schedule() -> str:
    """The shipped engine.toml's [scheduling] and [handoff] sections (its last): the engine's code, not the host's."""
    from importlib import resources

    text = (resources.files("cloudmatrix.specs") / "catalog" / "backends" / "engine.toml").read_text()
    return text[text.index("\n[scheduling]") + 1 :]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="write engine-backend.toml here")
    args = ap.parse_args()
    m = measure()
    print(json.dumps({k: v for k, v in m.items() if k != "counts"}, indent=1, default=float))
    for c, cnt in m["counts"].items():
        for phase in ("prefill", "decode"):
            print(f"concurrency {c} {phase}: ops per step by bucket {cnt[phase]['ops']}")
    print(render_profile(m))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "engine-backend.toml").write_text(render_profile(m))
        print(f"wrote {args.out / 'engine-backend.toml'}")


if __name__ == "__main__":
    main()
