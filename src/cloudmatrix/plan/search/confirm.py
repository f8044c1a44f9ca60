"""Confirmation: each candidate written as a scenario and run by the discrete-event simulator under the
requested traffic, in local processes (default) or as Ray tasks (`--ray [ADDRESS]`)."""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.plan.search.plans import Plan
from cloudmatrix.plan.search.request import PlanRequest

SLO_TARGET = 0.9  # the p90 targets: 90% of requests must meet both (the scenario's [slo] target)
MAX_CONFIRM_REQUESTS = 60_000  # per run: keeps one confirmation to seconds (the window shrinks, not the rate)
MIN_WINDOW_S = 8.0


def _window(plan: Plan, req: PlanRequest) -> tuple[float, float]:
    """(warm-up, measured seconds): the warm-up covers a request's life so the pools reach steady state."""
    life = plan.ttft + (req.osl - 1) * plan.tpot
    warm = max(3.0, 1.5 * life)
    measure = req.sim_seconds
    if plan.rate * (warm + measure) > MAX_CONFIRM_REQUESTS:
        measure = max(MIN_WINDOW_S, MAX_CONFIRM_REQUESTS / plan.rate - warm)
    return warm, measure


def scenario_toml(plan: Plan, req: PlanRequest, name: str | None = None) -> str:
    """The plan as a scenario file that `cloudmatrix simulate` runs unchanged."""
    sw = plan.software
    warm, measure = _window(plan, req)
    total = round(warm + measure, 3)
    nodes = plan.system.nodes if plan.system.spec.power is None and plan.system.spec.price_usd is None else None
    lines = [
        f"# Written by `cloudmatrix plan`: {req.model} on {plan.system_key}, {req.traffic_label()}.",
        f"# Screen: {plan.chips} chips, {plan.tokens_per_chip:,.0f} output tokens/s per chip, TPOT "
        f"{plan.tpot * 1e3:.1f} ms at the batch cap, TTFT p90 ~{plan.ttft:.2f} s (estimate).",
        f'name = "{name or "plan-" + plan.system_key}"',
        f'description = "{plan.label()}"',
        f'system = "{plan.system_key}"',
        *([f"nodes = {nodes}"] if nodes is not None else []),
        f'model = "{req.model}"',
        f'mode = "{plan.mode}"',
        f"duration = {total}",
        f"warmup = {round(warm, 3)}",
        f"seed = {req.seed}",
        "",
        *_pool_lines(plan),
        "[mtp]",
        f"depth = {sw.mtp_depth}",
        f"acceptance = {float(sw.mtp_acceptance)}",
        "",
        "[precision]",
        f'weights = "{sw.precision}"',
        f'kv_cache = "{sw.kv_cache}"',
        "",
        "[slo]",
        f"ttft = {float(req.ttft_p90)}",
        f"tpot = {float(req.tpot_p90)}",
        f"target = {SLO_TARGET}",
        "",
        "[workload]",
    ]
    if req.concurrency is not None:
        n = max(req.concurrency * 2, math.ceil(plan.rate * total))
        lines += ['kind = "closed"', f"concurrency = {req.concurrency}", f"num_requests = {n}"]
    else:
        lines += ['kind = "poisson"', f"rate = {float(plan.rate)}", f"duration = {total}"]
    lines += [f"input_len = {req.isl}", f"output_len = {req.osl}", f"seed = {req.seed}", ""]
    return "\n".join(lines)


def _pool_lines(plan: Plan) -> list[str]:
    m, d = plan.model, plan.decode

    def shape(lay, n: int) -> list[str]:
        return [f"instances = {n}", f"dies = {lay.dies}", *([f"ep = {lay.ep(m)}"] if m.is_moe else []),
                f"attn_tp = {lay.attn_tp}", f"moe_tp = {lay.moe_tp}", f"microbatches = {lay.microbatches}"]  # fmt: skip

    if plan.prefill is None:
        return ["[colocated]", *shape(d, plan.decode_instances), f"batch_per_die = {plan.batch_per_die}",
                f"tokens_per_die = {plan.prefill_tokens_per_die}", ""]  # fmt: skip
    return [
        "[prefill]", *shape(plan.prefill, plan.prefill_instances), f"tokens_per_die = {plan.prefill_tokens_per_die}",
        "", "[decode]", *shape(d, plan.decode_instances), f"batch_per_die = {plan.batch_per_die}", "",
    ]  # fmt: skip


def run_scenario_text(text: str) -> dict[str, Any]:
    """Simulate one scenario given as TOML text; the figures confirmation judges by."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from cloudmatrix.sim.scenario import Scenario
    from cloudmatrix.sim.simulation import run_scenario

    try:
        sc = Scenario.model_validate(tomllib.loads(text))
        s = run_scenario(sc).summary
    except CloudMatrixError as e:
        return {"error": str(e), "meets_slo": False}
    ttft, tpot = s["ttft_s"]["p90"], s["tpot_s"]["p90"]
    chips = sum(p["chips"] for p in s["pools"].values())
    return {
        "ttft_p90_s": ttft,
        "tpot_p90_s": tpot,
        "goodput_requests_per_s": s.get("goodput_requests_per_s"),
        "slo_attainment": s.get("slo_attainment"),
        "requests_per_s": s["requests"]["per_s"],
        "output_tokens_per_s": s["output_tokens_per_s"],
        "output_tokens_per_s_per_chip": s["output_tokens_per_s"] / chips,
        "decode_tokens_per_s_per_chip": s["decode_tokens_per_s_per_chip"],
        "mean_batch_per_die": s["pools"]["colocated" if sc.mode == "colocated" else "decode"].get("mean_batch_per_die"),
        "window_s": s["measured_s"],
        "meets_slo": bool(ttft <= sc.slo.ttft and tpot <= sc.slo.tpot),
    }


def confirm(
    texts: Sequence[str],
    workers: int = 2,
    ray_address: str | None = None,
    use_ray: bool = False,
    done: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every scenario; results in the order given."""
    if not texts:
        return []
    if use_ray:
        return _confirm_ray(texts, ray_address, done)
    if workers <= 1 or len(texts) == 1:
        out = []
        for t in texts:
            out.append(run_scenario_text(t))
            if done:
                done()
        return out
    # spawn: the parent may hold threads (the progress bar); forking those is unsafe
    with ProcessPoolExecutor(max_workers=min(workers, len(texts)), mp_context=get_context("spawn")) as ex:
        futures = [ex.submit(run_scenario_text, t) for t in texts]
        out = []
        for f in futures:
            out.append(f.result())
            if done:
                done()
        return out


def _confirm_ray(texts: Sequence[str], address: str | None, done: Callable[[], None] | None) -> list[dict]:
    try:
        import ray
    except ImportError:
        raise CloudMatrixError("--ray needs Ray: pip install 'cloudmatrix[scale]'") from None
    if not ray.is_initialized():
        ray.init(address=address or None, ignore_reinit_error=True, log_to_driver=False)
    task = ray.remote(num_cpus=1)(run_scenario_text)
    refs = [task.remote(t) for t in texts]
    out = []
    for r in refs:
        out.append(ray.get(r))
        if done:
            done()
    return out
