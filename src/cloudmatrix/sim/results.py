"""A finished run: per-request records, token event series and the per-pool accounting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from cloudmatrix.sim.metrics import SLO, RequestRecords, busy_fraction, latency_stats, summarize
from cloudmatrix.sim.scenario import Scenario

if TYPE_CHECKING:
    from cloudmatrix.sim.serving_sim import ServingSimulation


@dataclass
class SimResult:
    scenario: Scenario
    records: RequestRecords
    end_time: float
    summary: dict[str, Any]
    output_events: tuple[np.ndarray, np.ndarray]
    input_events: tuple[np.ndarray, np.ndarray]
    running_events: tuple[np.ndarray, np.ndarray]
    pools: dict[str, dict[str, float]] = field(default_factory=dict)


def build_result(sim: ServingSimulation, end: float) -> SimResult:
    """`end` is the horizon: throughput and utilisation are measured over [warmup, end]; requests that
    arrived by then may finish later (the drain) and count in the latency figures."""
    sc = sim.sc
    steps_out = np.asarray(sim.wl.output_len - 1, dtype=np.float64)
    steps_out[steps_out < 1] = np.nan
    mean_itl = (sim.finish - sim.first_token) / steps_out
    records = RequestRecords(
        sim.arrival, sim.first_token, sim.finish, sim.wl.input_len, sim.wl.output_len,
        mean_itl=mean_itl, max_itl=sim.max_itl,
    )  # fmt: skip
    dies_per_chip = sim.system.chip.dies
    chips = {name: max(1, round(p.instances * p.dies / dies_per_chip)) for name, p in sc.pools().items()}
    out_ev = (_view(sim.out_s), _view(sim.out_e), _view(sim.out_n))
    in_ev = (_view(sim.in_s), _view(sim.in_e), _view(sim.in_n))
    dname = sim.decode_pool
    run_ev = (_view(sim.step_start[dname]), _view(sim.run_n))
    t0 = min(sc.warmup, end)
    summary = summarize(
        records,
        warmup=t0,
        end=end,
        chips=chips,
        slo=SLO(sc.slo.ttft, sc.slo.tpot, sc.slo.target),
        output_events=out_ev,
        input_events=in_ev,
    )
    # the TTFT parts over the latency population only (arrived in the window, finished): no full-length temporaries
    population = np.flatnonzero((sim.arrival >= t0) & (sim.arrival <= end) & ~np.isnan(sim.finish))
    summary["ttft_components_s"] = {
        name: {k: v for k, v in latency_stats(x).items() if k in ("mean", "p50")}
        for name, x in ttft_components(sim, population).items()
    }
    pools: dict[str, dict[str, Any]] = {}
    for name, p in sc.pools().items():
        starts, dts = _view(sim.step_start[name]), _view(sim.step_dt[name])
        in_window = (starts < end) & (starts + dts > t0)
        pools[name] = {
            "instances": p.instances,
            "dies_per_instance": p.dies,
            "chips": chips[name],
            # busy time inside the window over instance-time in it: the window throughput is measured in
            "utilisation": busy_fraction(starts, dts, t0, end, p.instances),
            "steps": int(in_window.sum()),
        }
    busy = float(np.sum(sim.step_dt[dname]))
    pools[dname]["kv_occupancy_mean"] = sim.kv_occupancy_sum / busy if busy else 0.0
    pools[dname]["kv_capacity_tokens_per_instance"] = sim.kv_capacity_tokens
    dpool = sc.pools()[dname]
    if sim.run_n and end > t0:
        # time-weighted batch over the window: each step holds its batch for its duration
        s0 = run_ev[0]
        w = np.clip(np.minimum(s0 + _view(sim.step_dt[dname]), end) - np.maximum(s0, t0), 0.0, None)
        pools[dname]["mean_batch_per_die"] = float(np.sum(run_ev[1] * w) / (end - t0) / dpool.dies / dpool.instances)
    else:
        pools[dname]["mean_batch_per_die"] = 0.0
    in_tps, out_tps = summary["input_tokens_per_s"], summary["output_tokens_per_s"]
    prefill_pool = "prefill" if sc.mode == "disaggregated" else dname
    summary["prefill_tokens_per_s_per_chip"] = in_tps / chips[prefill_pool]
    summary["decode_tokens_per_s_per_chip"] = out_tps / chips[dname]
    summary["pools"] = pools
    summary["kv_transfer_gb"] = sim.transfer_bytes / 1e9
    summary["simulated_s"] = end
    summary["measured_s"] = end - t0
    summary["drained_to_s"] = float(np.nanmax(np.append(sim.finish, end)))
    if sim.cache is not None:
        summary["cache"] = sim.cache.stats()
        summary["cache"]["prefill_tokens_saved"] = int(sim.cached[~np.isnan(sim.first_token)].sum())
    issued = ~np.isnan(sim.arrival) & (sim.arrival <= end)
    summary["requests"]["in_flight_at_end"] = int(np.sum(issued & ~(sim.finish <= end)))
    summary["requests"]["never_issued"] = int(np.sum(~issued))
    return SimResult(sc, records, end, summary, out_ev, in_ev, run_ev, pools)


def _view(a) -> np.ndarray:
    """A float64 typed array as numpy, without a copy."""
    return np.frombuffer(a, dtype=np.float64) if len(a) else np.zeros(0)


def ttft_components(sim: ServingSimulation, idx: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """TTFT of requests `idx` (default: all) split into what each waited for [s]; the parts sum to its TTFT.

    One-token answers never reach a decode slot: their first token leaves at prefill end. A decode worker
    that pulls the KV after giving the request a slot (TensorRT-LLM, sim/disaggregated.py) has the slot wait
    before the transfer; "front_end" holds what follows both (detokenising, and the first decode step where
    the stack streams the first token with it).
    """
    sel = slice(None) if idx is None else idx
    arrival, queued, start, end = sim.arrival[sel], sim.queued[sel], sim.prefill_start[sel], sim.prefill_end[sel]
    admitted, first = sim.admitted[sel], sim.first_token[sel]
    one = np.isnan(admitted)
    kv_ready = np.where(one, end, sim.kv_ready[sel])
    slot = np.where(one, end, admitted)
    pulled = kv_ready > slot  # admitted first, KV transferred after
    return {
        "front_end": (queued - arrival) + (first - np.maximum(slot, kv_ready)),
        "prefill_queue": start - queued,
        "prefill": end - start,
        "kv_transfer": np.where(pulled, kv_ready - slot, kv_ready - end),
        "decode_slot_wait": np.where(pulled, slot - end, slot - kv_ready),
    }
