"""A finished run: per-request records, token event series and the per-pool accounting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from cloudmatrix.sim.metrics import SLO, RequestRecords, summarize
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
    out_ev = (np.asarray(sim.out_t), np.asarray(sim.out_n, dtype=np.float64))
    in_ev = (np.asarray(sim.in_t), np.asarray(sim.in_n, dtype=np.float64))
    run_ev = (np.asarray(sim.run_t), np.asarray(sim.run_n, dtype=np.float64))
    span = max(end - sc.warmup, 1e-9)
    summary = summarize(
        records,
        warmup=min(sc.warmup, end),
        end=end,
        chips=chips,
        slo=SLO(sc.slo.ttft, sc.slo.tpot),
        output_events=out_ev,
        input_events=in_ev,
    )
    pools: dict[str, dict[str, Any]] = {}
    for name, p in sc.pools().items():
        pools[name] = {
            "instances": p.instances,
            "dies_per_instance": p.dies,
            "chips": chips[name],
            "utilisation": sim.busy_time[name] / (p.instances * end) if end > 0 else 0.0,
            "steps": sim.steps[name],
        }
    dname = sim.decode_pool
    busy = sim.busy_time[dname]
    pools[dname]["kv_occupancy_mean"] = sim.kv_occupancy_sum / busy if busy else 0.0
    pools[dname]["kv_capacity_tokens_per_instance"] = sim.kv_capacity_tokens
    if sim.run_n:
        # time-weighted batch over the measurement window: each step holds its batch for its duration
        t0 = min(sc.warmup, end)
        starts = np.clip(run_ev[0], t0, end)
        stops = np.clip(run_ev[0] + np.asarray(sim.run_dt), t0, end)
        w = stops - starts
        dpool = sc.pools()[dname]
        pools[dname]["mean_batch_per_die"] = float(
            np.sum(run_ev[1] * w) / max(end - t0, 1e-12) / dpool.dies / dpool.instances
        )
    in_tps, out_tps = summary["input_tokens_per_s"], summary["output_tokens_per_s"]
    prefill_pool = "prefill" if sc.mode == "disaggregated" else dname
    summary["prefill_tokens_per_s_per_chip"] = in_tps / chips[prefill_pool]
    summary["decode_tokens_per_s_per_chip"] = out_tps / chips[dname]
    summary["pools"] = pools
    summary["kv_transfer_gb"] = sim.transfer_bytes / 1e9
    summary["simulated_s"] = end
    summary["measured_s"] = span
    if sim.cache is not None:
        summary["cache"] = sim.cache.stats()
        summary["cache"]["prefill_tokens_saved"] = int(sim.cached[~np.isnan(sim.first_token)].sum())
    summary["requests"]["in_flight_at_end"] = int(
        np.sum(~np.isnan(sim.arrival) & np.isnan(sim.finish) & (sim.arrival <= end))
    )
    summary["requests"]["never_issued"] = int(np.sum(np.isnan(sim.arrival) | (sim.arrival > end)))
    return SimResult(sc, records, end, summary, out_ev, in_ev, run_ev, pools)
