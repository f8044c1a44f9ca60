"""The discrete-event simulation: the control plane driven in virtual time with step costs from `perf`.

Events are prefill batches finishing, KV transfers landing, decode steps finishing and
requests arriving. Each event hands work to the schedulers in `cloudmatrix.serving`,
which decide the next batch; its cost comes from `PoolCosts`. Per-request state is
numpy arrays indexed by request id; a decode step updates all its sequences at once.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf import comm
from cloudmatrix.serving.decode_scheduler import DecodeInstance
from cloudmatrix.serving.kv_blocks import KVBlockManager
from cloudmatrix.serving.prefill_scheduler import PrefillBatch, PrefillQueue, PrefillScheduler
from cloudmatrix.serving.prefix_cache import PrefixCache
from cloudmatrix.sim.costs import PoolCosts
from cloudmatrix.sim.metrics import SLO, RequestRecords, summarize
from cloudmatrix.sim.scenario import Scenario

ARRIVAL, PREFILL_DONE, TRANSFER_DONE, DECODE_DONE, COLOCATED_DONE = range(5)


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


class Simulation:
    def __init__(self, scenario: Scenario):
        self.sc = scenario
        self.system, self.model = scenario.check()
        self.wl = scenario.workload.build(scenario.base_dir)
        n = len(self.wl)
        if n == 0:
            raise CloudMatrixError("the workload has no requests; raise num_requests or duration")
        self.n = n
        self.arrival = self.wl.arrival_time.copy()
        self.first_token = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.last_token = np.full(n, np.nan)
        self.max_itl = np.full(n, np.nan)
        self.cached = np.zeros(n, dtype=np.int64)
        self.rng = np.random.default_rng(scenario.seed)
        self.kv_bytes_per_token = self.model.kv_bytes_per_token(scenario.precision.kv_cache)
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()
        self.busy_time: dict[str, float] = {}
        self.steps: dict[str, int] = {}
        self.out_t: list[float] = []
        self.out_n: list[int] = []
        self.in_t: list[float] = []
        self.in_n: list[int] = []
        self.run_t: list[float] = []
        self.run_n: list[int] = []
        self.run_dt: list[float] = []
        self.transfer_bytes = 0.0
        self.kv_occupancy_sum = 0.0
        self._next_issue = 0
        self._build_pools()
        self._build_cache()

    # ------------------------------------------------------------ set-up
    def _build_pools(self) -> None:
        sc, model, system = self.sc, self.model, self.system
        max_len = int((self.wl.input_len + self.wl.output_len).max())
        pools = sc.pools()
        self.costs: dict[str, PoolCosts] = {}
        for name, pool in pools.items():
            self.costs[name] = PoolCosts(model, system, sc.deployment(pool, model), sc.experts, sc.base_dir)
            self.busy_time[name] = 0.0
            self.steps[name] = 0
        decode_name = "decode" if sc.mode == "disaggregated" else "colocated"
        dpool, dcost = pools[decode_name], self.costs[decode_name]
        tokens_in_flight = dpool.batch_per_die * (1 + sc.mtp.depth)
        if sc.mode == "colocated":
            tokens_in_flight += dpool.tokens_per_die
        kv_tokens = dcost.kv_tokens_per_instance(tokens_in_flight)
        if kv_tokens < max_len:
            raise CloudMatrixError(
                f"a {decode_name} instance holds {kv_tokens:,.0f} KV tokens but the longest request needs "
                f"{max_len:,}; use more dies per instance, an INT8 KV cache, or shorter requests"
            )
        mean_len = float((self.wl.input_len + self.wl.output_len / 2).mean())
        if dpool.batch_per_die * dpool.dies * mean_len > kv_tokens:
            fits = int(kv_tokens / mean_len / dpool.dies)
            raise CloudMatrixError(
                f"[{decode_name}] batch_per_die = {dpool.batch_per_die} does not fit: at this workload's mean "
                f"context of {mean_len:,.0f} tokens a die holds KV for about {fits} sequences; lower batch_per_die "
                f"to {fits} or less, use an INT8 KV cache, or more dies per instance"
            )
        self.kv_capacity_tokens = kv_tokens
        bs = sc.kv_block_size
        self.decoders = [
            DecodeInstance(
                dpool.batch_per_die * dpool.dies,
                KVBlockManager(int(kv_tokens // bs), bs, expected_requests=self.n),
                dies=dpool.dies,
            )
            for _ in range(dpool.instances)
        ]
        if sc.mode == "disaggregated":
            p = pools["prefill"]
            self.costs["prefill"].check_prefill_fit(p.tokens_per_die, f"prefill of {p.tokens_per_die} tokens per die")
            self.prefill = PrefillScheduler(p.instances, p.tokens_per_die * p.dies, p.policy)
            self.colocated: list[PrefillQueue] = []
        else:
            self.costs["colocated"].check_prefill_fit(dpool.tokens_per_die, "the colocated chunked-prefill budget")
            self.colocated = [
                PrefillQueue(dpool.tokens_per_die * dpool.dies, dpool.policy) for _ in range(dpool.instances)
            ]
        # P -> D KV transfer over the scale-out (RDMA) plane from the die that computed the prompt
        out = system.spec.scale_out
        self._xfer_bw = comm.die_bandwidth(system, out)
        self._xfer_fabric = out

    def _build_cache(self) -> None:
        c = self.sc.caching
        self.cache: PrefixCache | None = None
        if not c.enabled:
            return
        pool = self.system.spec.cpu_pool
        if c.capacity_gb is not None:
            capacity = c.capacity_gb * 1e9
        elif pool is not None:
            capacity = pool.dram_per_node * self.system.nodes
        else:
            raise CloudMatrixError(
                f"{self.system.name} has no CPU memory pool in its hardware file; set [caching] capacity_gb"
            )
        self.cache = PrefixCache(int(capacity // (c.block_size * self.kv_bytes_per_token)), c.block_size)
        # the prefill dies read cached KV from CPU DRAM over the fabric the pool sits on
        self._cache_read_bw = comm.cache_read_bandwidth_per_die(self.system, c.plane)

    # ------------------------------------------------------------ events
    def _push(self, t: float, kind: int, arg: Any) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), kind, arg))

    def run(self, progress: Callable[[float], None] | None = None) -> SimResult:
        wl, sc = self.wl, self.sc
        if wl.closed_loop:
            first = min(wl.concurrency, self.n)
            self.arrival[:first] = 0.0
            for i in range(first):
                self._push(0.0, ARRIVAL, i)
            self._next_issue = first
        else:
            self._push(float(self.arrival[0]), ARRIVAL, 0)
        horizon = sc.duration if sc.duration is not None else float("inf")
        t = 0.0
        next_tick = 1.0
        heap = self._heap
        while heap:
            if heap[0][0] > horizon:
                t = horizon
                break
            t, _, kind, arg = heapq.heappop(heap)
            if progress is not None and t >= next_tick:
                progress(t)
                next_tick = float(int(t) + 1)
            if kind == DECODE_DONE:
                self._decode_done(arg, t)
            elif kind == ARRIVAL:
                self._arrive(arg, t)
            elif kind == TRANSFER_DONE:
                self._transfer_done(arg, t)
            elif kind == PREFILL_DONE:
                self._prefill_done(arg[0], arg[1], t)
            else:
                self._colocated_done(arg[0], arg[1], arg[2], t)
        return self._result(t)

    def _arrive(self, r: int, t: float) -> None:
        if not self.wl.closed_loop and r + 1 < self.n:
            self._push(float(self.arrival[r + 1]), ARRIVAL, r + 1)
        length = int(self.wl.input_len[r])
        cached = 0
        if self.cache is not None:
            hashes = self.wl.block_hashes_for(r, self.cache.block_size)
            # at least the last token is computed: its logits give the first output token
            cached = min(self.cache.lookup(hashes) * self.cache.block_size, length - 1)
        self.cached[r] = cached
        if self.sc.mode == "disaggregated":
            q = self.prefill.assign(r, length, cached)
            if not self.prefill.queues[q].busy:
                self._start_prefill(q, t)
        else:
            i = _least_queued(self.colocated)
            self.colocated[i].enqueue(r, length, cached)
            if not self.decoders[i].busy:
                self._start_colocated(i, t)

    def _cache_read_time(self, tokens: int, dies: int) -> float:
        if tokens == 0:
            return 0.0
        return tokens * self.kv_bytes_per_token / (self._cache_read_bw * dies)

    def _start_prefill(self, q: int, t: float) -> None:
        queue = self.prefill.queues[q]
        batch = queue.next_batch()
        if batch is None:
            queue.busy = False
            return
        cost = self.costs["prefill"]
        dt = cost.prefill_time(batch.tokens, batch.context_sum) + self._cache_read_time(
            batch.cached_tokens, cost.dep.dies
        )
        queue.busy = True
        self.busy_time["prefill"] += dt
        self.steps["prefill"] += 1
        self._push(t + dt, PREFILL_DONE, (q, batch))

    def _first_token(self, batch: PrefillBatch, t: float) -> list[int]:
        """Prompts finished by a batch: their first output token exists now."""
        done = batch.finishing
        if not done:
            return done
        idx = np.asarray(done)
        self.first_token[idx] = t
        self.last_token[idx] = t
        self.in_t.append(t)
        self.in_n.append(int(self.wl.input_len[idx].sum()))
        self.out_t.append(t)
        self.out_n.append(len(done))
        if self.cache is not None:
            for r in done:
                self.cache.insert(self.wl.block_hashes_for(r, self.cache.block_size))
        return done

    def _prefill_done(self, q: int, batch: PrefillBatch, t: float) -> None:
        # KV of finished prompts goes to the decode pool over RDMA; prompts of one length land together
        by_length: dict[int, list[int]] = {}
        for r in self._first_token(batch, t):
            if self.wl.output_len[r] <= 1:
                self._finish(r, t)
            else:
                by_length.setdefault(int(self.wl.input_len[r]), []).append(r)
        for length, reqs in by_length.items():
            nbytes = length * self.kv_bytes_per_token
            self.transfer_bytes += nbytes * len(reqs)
            self._push(t + comm.transfer(self._xfer_fabric, self._xfer_bw, nbytes), TRANSFER_DONE, reqs)
        self._start_prefill(q, t)

    def _transfer_done(self, reqs: list[int], t: float) -> None:
        for r in reqs:
            d = self.decoders[_least_loaded(self.decoders)]
            d.enqueue(r, int(self.wl.input_len[r]) + 1, int(self.wl.output_len[r]) - 1, float(self.first_token[r]))
        for j, d in enumerate(self.decoders):
            if not d.busy and d.queued:
                self._start_decode(j, t)

    def _start_decode(self, j: int, t: float) -> None:
        d = self.decoders[j]
        d.admit()
        n = d.running
        if n == 0:
            d.busy = False
            return
        dt = self.costs["decode"].decode_time(*d.busiest_die())
        self._book_step("decode", d, n, dt, t)
        self._push(t + dt, DECODE_DONE, j)

    def _book_step(self, pool: str, d: DecodeInstance, n: int, dt: float, t: float) -> None:
        """Account a step that starts at `t` with `n` sequences decoding and lasts `dt`."""
        d.busy = True
        self.busy_time[pool] += dt
        self.steps[pool] += 1
        self.kv_occupancy_sum += d.kv.occupancy * dt
        self.run_t.append(t)
        self.run_n.append(n)
        self.run_dt.append(dt)

    def _tokens_per_seq(self, n: int) -> np.ndarray:
        """1 + accepted MTP drafts per sequence: drafts are accepted in order until the first rejection."""
        m = self.sc.mtp
        if m.depth == 0 or m.acceptance == 0:
            return np.ones(n, dtype=np.int64)
        if m.depth == 1:
            return 1 + (self.rng.random(n, dtype=np.float32) < m.acceptance)
        ok = self.rng.random((n, m.depth), dtype=np.float32) < m.acceptance
        return 1 + np.cumprod(ok, axis=1).sum(axis=1)

    def _apply_decode_step(self, d: DecodeInstance, t: float) -> None:
        total, finished, gaps = d.complete_step(self._tokens_per_seq(d.max_seqs), t)
        self.out_t.append(t)
        self.out_n.append(total)
        if finished.size:
            self.max_itl[finished] = gaps
            for r in finished.tolist():
                self._finish(r, t)

    def _decode_done(self, j: int, t: float) -> None:
        self._apply_decode_step(self.decoders[j], t)
        self._start_decode(j, t)

    # ------------------------------------------------------------ colocated serving
    def _start_colocated(self, i: int, t: float) -> None:
        d, q = self.decoders[i], self.colocated[i]
        d.admit()
        n = d.running
        batch = q.next_batch()
        if n == 0 and batch is None:
            d.busy = False
            return
        cost = self.costs["colocated"]
        # a mixed step runs the decode batch and the prefill chunk; their costs add
        dt = cost.decode_time(*d.busiest_die()) if n else 0.0
        if batch is not None:
            dt += cost.prefill_time(batch.tokens, batch.context_sum)
            dt += self._cache_read_time(batch.cached_tokens, cost.dep.dies)
        self._book_step("colocated", d, n, dt, t)
        self._push(t + dt, COLOCATED_DONE, (i, batch, n > 0))

    def _colocated_done(self, i: int, batch: PrefillBatch | None, decoded: bool, t: float) -> None:
        d = self.decoders[i]
        if decoded:
            self._apply_decode_step(d, t)
        if batch is not None:
            for r in self._first_token(batch, t):
                if self.wl.output_len[r] <= 1:
                    self._finish(r, t)
                else:
                    d.enqueue(r, int(self.wl.input_len[r]) + 1, int(self.wl.output_len[r]) - 1, t)
        self._start_colocated(i, t)

    # ------------------------------------------------------------ completion
    def _finish(self, r: int, t: float) -> None:
        self.finish[r] = t
        if self.wl.closed_loop and self._next_issue < self.n:
            k = self._next_issue
            self._next_issue += 1
            self.arrival[k] = t
            self._arrive(k, t)  # the client sends its next request at once

    def _result(self, end: float) -> SimResult:
        sc = self.sc
        steps_out = np.asarray(self.wl.output_len - 1, dtype=np.float64)
        steps_out[steps_out < 1] = np.nan
        mean_itl = (self.finish - self.first_token) / steps_out
        records = RequestRecords(
            self.arrival,
            self.first_token,
            self.finish,
            self.wl.input_len,
            self.wl.output_len,
            mean_itl=mean_itl,
            max_itl=self.max_itl,
        )
        dies_per_chip = self.system.chip.dies
        chips = {name: max(1, round(p.instances * p.dies / dies_per_chip)) for name, p in sc.pools().items()}
        out_ev = (np.asarray(self.out_t), np.asarray(self.out_n, dtype=np.float64))
        in_ev = (np.asarray(self.in_t), np.asarray(self.in_n, dtype=np.float64))
        run_ev = (np.asarray(self.run_t), np.asarray(self.run_n, dtype=np.float64))
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
        pools = {}
        for name, p in sc.pools().items():
            pools[name] = {
                "instances": p.instances,
                "dies_per_instance": p.dies,
                "chips": chips[name],
                "utilisation": self.busy_time[name] / (p.instances * end) if end > 0 else 0.0,
                "steps": self.steps[name],
            }
        decode_name = "decode" if sc.mode == "disaggregated" else "colocated"
        busy = self.busy_time[decode_name]
        pools[decode_name]["kv_occupancy_mean"] = self.kv_occupancy_sum / busy if busy else 0.0
        pools[decode_name]["kv_capacity_tokens_per_instance"] = self.kv_capacity_tokens
        if self.run_n:
            # time-weighted batch over the measurement window: each step holds its batch for its duration
            t0 = min(sc.warmup, end)
            starts = np.clip(run_ev[0], t0, end)
            stops = np.clip(run_ev[0] + np.asarray(self.run_dt), t0, end)
            w = stops - starts
            instances = sc.pools()[decode_name].instances
            pools[decode_name]["mean_batch_per_die"] = float(
                np.sum(run_ev[1] * w) / max(end - t0, 1e-12) / sc.pools()[decode_name].dies / instances
            )
        in_tps, out_tps = summary["input_tokens_per_s"], summary["output_tokens_per_s"]
        if sc.mode == "disaggregated":
            summary["prefill_tokens_per_s_per_chip"] = in_tps / chips["prefill"]
            summary["decode_tokens_per_s_per_chip"] = out_tps / chips["decode"]
        else:
            summary["prefill_tokens_per_s_per_chip"] = in_tps / chips["colocated"]
            summary["decode_tokens_per_s_per_chip"] = out_tps / chips["colocated"]
        summary["pools"] = pools
        summary["kv_transfer_gb"] = self.transfer_bytes / 1e9
        summary["simulated_s"] = end
        summary["measured_s"] = span
        if self.cache is not None:
            summary["cache"] = self.cache.stats()
            summary["cache"]["prefill_tokens_saved"] = int(self.cached[~np.isnan(self.first_token)].sum())
        summary["requests"]["in_flight_at_end"] = int(
            np.sum(~np.isnan(self.arrival) & np.isnan(self.finish) & (self.arrival <= end))
        )
        summary["requests"]["never_issued"] = int(np.sum(np.isnan(self.arrival) | (self.arrival > end)))
        return SimResult(sc, records, end, summary, out_ev, in_ev, run_ev, pools)


def simulate(scenario: Scenario, progress: Callable[[float], None] | None = None) -> SimResult:
    return Simulation(scenario).run(progress)


def _least_loaded(decoders: list[DecodeInstance]) -> int:
    if len(decoders) == 1:
        return 0
    loads = [d.running + d.queued for d in decoders]
    return loads.index(min(loads))


def _least_queued(queues: list[PrefillQueue]) -> int:
    if len(queues) == 1:
        return 0
    loads = [q.queued_tokens for q in queues]
    return loads.index(min(loads))
