"""What both serving modes share: the request arrays, arrivals and closed-loop clients, the decode
pool's instances, the caching pool, MTP draws, finishing a request, and the run itself.

Per-request state is numpy arrays indexed by request id; a decode step updates all its sequences
at once. A mode (`disaggregated.py`, `colocated.py`) supplies where an arriving prompt goes and how
its instances step.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf import comm
from cloudmatrix.serving.decode_scheduler import DecodeInstance
from cloudmatrix.serving.kv_blocks import KVBlockManager
from cloudmatrix.serving.prefill_scheduler import PrefillBatch
from cloudmatrix.serving.prefix_cache import PrefixCache
from cloudmatrix.sim.costs import PoolCosts
from cloudmatrix.sim.results import SimResult, build_result
from cloudmatrix.sim.runtime import EventLoop
from cloudmatrix.sim.scenario import PoolSpec, Scenario


class ServingSimulation:
    decode_pool = "decode"  # the pool whose instances decode (a mode overrides it)

    def __init__(self, scenario: Scenario):
        self.sc = scenario
        self.system, self.model = scenario.check()
        self.wl = scenario.workload.build(scenario.base_dir)
        n = len(self.wl)
        if n == 0:
            raise CloudMatrixError("the workload has no requests; raise num_requests or duration")
        self.n = n
        self.loop = EventLoop()
        self.arrival = self.wl.arrival_time.copy()
        self.first_token = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.max_itl = np.full(n, np.nan)
        self.cached = np.zeros(n, dtype=np.int64)
        self.rng = np.random.default_rng(scenario.seed)
        self.kv_bytes_per_token = self.model.kv_bytes_per_token(scenario.precision.kv_cache)
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
        pools = scenario.pools()
        self.costs: dict[str, PoolCosts] = {}
        for name, pool in pools.items():
            self.costs[name] = PoolCosts(self.model, self.system, scenario.deployment(pool, self.model),
                                         scenario.experts, scenario.base_dir)  # fmt: skip
            self.busy_time[name] = 0.0
            self.steps[name] = 0
        self._build_decoders(pools[self.decode_pool])
        self._build_cache()

    # ------------------------------------------------------------ set-up
    def _tokens_in_flight_per_die(self, pool: PoolSpec) -> float:
        """Tokens a decode die computes at once (its activations compete with the KV cache)."""
        return pool.batch_per_die * (1 + self.sc.mtp.depth)  # type: ignore[operator]

    def _build_decoders(self, dpool: PoolSpec) -> None:
        name, dcost = self.decode_pool, self.costs[self.decode_pool]
        max_len = int((self.wl.input_len + self.wl.output_len).max())
        kv_tokens = dcost.kv_tokens_per_instance(self._tokens_in_flight_per_die(dpool))
        if kv_tokens < max_len:
            raise CloudMatrixError(
                f"a {name} instance holds {kv_tokens:,.0f} KV tokens but the longest request needs "
                f"{max_len:,}; use more dies per instance, an INT8 KV cache, or shorter requests"
            )
        mean_len = float((self.wl.input_len + self.wl.output_len / 2).mean())
        if dpool.batch_per_die * dpool.dies * mean_len > kv_tokens:  # type: ignore[operator]
            fits = int(kv_tokens / mean_len / dpool.dies)
            raise CloudMatrixError(
                f"[{name}] batch_per_die = {dpool.batch_per_die} does not fit: at this workload's mean "
                f"context of {mean_len:,.0f} tokens a die holds KV for about {fits} sequences; lower batch_per_die "
                f"to {fits} or less, use an INT8 KV cache, or more dies per instance"
            )
        self.kv_capacity_tokens = kv_tokens
        bs = self.sc.kv_block_size
        self.decoders = [
            DecodeInstance(
                dpool.batch_per_die * dpool.dies,  # type: ignore[operator]
                KVBlockManager(int(kv_tokens // bs), bs, expected_requests=self.n),
                dies=dpool.dies,
            )
            for _ in range(dpool.instances)
        ]

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

    # ------------------------------------------------------------ the run
    def run(self, progress: Callable[[float], None] | None = None) -> SimResult:
        wl, loop = self.wl, self.loop
        if wl.closed_loop:
            first = min(wl.concurrency, self.n)  # type: ignore[type-var]
            self.arrival[:first] = 0.0
            for i in range(first):
                loop.at(0.0, self._arrive, i)
            self._next_issue = first
        else:
            loop.at(float(self.arrival[0]), self._arrive, 0)
        horizon = self.sc.duration if self.sc.duration is not None else float("inf")
        end = loop.run(horizon, progress)
        return build_result(self, end)

    # ------------------------------------------------------------ requests
    def _arrive(self, r: int, t: float) -> None:
        if not self.wl.closed_loop and r + 1 < self.n:
            self.loop.at(float(self.arrival[r + 1]), self._arrive, r + 1)
        length = int(self.wl.input_len[r])
        cached = 0
        if self.cache is not None:
            hashes = self.wl.block_hashes_for(r, self.cache.block_size)
            # at least the last token is computed: its logits give the first output token
            cached = min(self.cache.lookup(hashes) * self.cache.block_size, length - 1)
        self.cached[r] = cached
        self._route(r, length, cached, t)

    def _route(self, r: int, length: int, cached: int, t: float) -> None:
        raise NotImplementedError

    def _finish(self, r: int, t: float) -> None:
        self.finish[r] = t
        if self.wl.closed_loop and self._next_issue < self.n:
            k = self._next_issue
            self._next_issue += 1
            self.arrival[k] = t
            self._arrive(k, t)  # the client sends its next request at once

    # ------------------------------------------------------------ shared step pieces
    def _cache_read_time(self, tokens: int, dies: int) -> float:
        if tokens == 0:
            return 0.0
        return tokens * self.kv_bytes_per_token / (self._cache_read_bw * dies)

    def _first_token(self, batch: PrefillBatch, t: float) -> list[int]:
        """Prompts finished by a batch: their first output token exists now."""
        done = batch.finishing
        if not done:
            return done
        idx = np.asarray(done)
        self.first_token[idx] = t
        self.in_t.append(t)
        self.in_n.append(int(self.wl.input_len[idx].sum()))
        self.out_t.append(t)
        self.out_n.append(len(done))
        if self.cache is not None:
            for r in done:
                self.cache.insert(self.wl.block_hashes_for(r, self.cache.block_size))
        return done

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
