"""What both serving modes share: the request arrays, arrivals and closed-loop clients, the decode
pool's instances, the caching pool, MTP draws, finishing a request, and the run itself.

Per-request state is numpy arrays indexed by request id; a decode step updates all its sequences
at once. A mode (`disaggregated.py`, `colocated.py`) supplies where an arriving prompt goes and how
its instances step.

TTFT is what a client measures. A request is sent at `arrival`; the front end handles and tokenises
it (`queued`); it waits for and runs prefill (`prefill_start`, `prefill_end`); its KV reaches a
decode instance (`kv_ready`, the P->D transfer; the same instant when colocated); it waits for a
decode slot (`admitted`), where the instance streams the prefill's token; detokenising it gives the
client its first token (`first_token`). Every later token reaches the client one detokenisation
after its step ends, so TPOT is unchanged by the constant front-end delay.

A run with a duration keeps going past it until every request that arrived in the measurement
window has finished (with the load still arriving), so latency percentiles cover a defined
population: the requests that arrived in the window, run until they finish.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable

import numpy as np

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf import comm, ems
from cloudmatrix.serving.decode_scheduler import DecodeInstance
from cloudmatrix.serving.kv_blocks import KVBlockManager
from cloudmatrix.serving.prefill_scheduler import PrefillBatch
from cloudmatrix.serving.prefix_cache import PrefixCache
from cloudmatrix.sim.costs import PoolCosts
from cloudmatrix.sim.results import SimResult, build_result
from cloudmatrix.sim.runtime import EventLoop
from cloudmatrix.sim.scenario import PoolSpec, Scenario
from cloudmatrix.sim.scheduling import scheduling_for

# a queued request's "last token" time: a placeholder, admission stamps the admission instant instead
_WAITING = -1.0
# rng.bytes is the little-endian byte stream of the generator's 64-bit words (tests/sim pin this)
_LITTLE_ENDIAN = sys.byteorder == "little"
# the drain after the horizon stops at this multiple of the horizon even if requests remain
DRAIN_LIMIT = 4.0


def _mean_context(wl) -> float:
    """A decoding sequence's mean context over its life: its prompt and half its output."""
    return float((wl.input_len + wl.output_len / 2).mean())


def tokens_in_flight_per_die(pool: PoolSpec, mtp_depth: int, colocated: bool) -> float:
    """Tokens a decode die computes at once (their activations compete with the KV cache); a colocated die also
    holds its step's prompt chunk."""
    tokens = pool.batch_per_die * (1 + mtp_depth)  # type: ignore[operator]
    return tokens + pool.tokens_per_die if colocated else tokens  # type: ignore[operator]


def _sequences_that_fit(kv_tokens: float, wl, dies: int) -> int:
    """Sequences of the workload's mean context whose KV one die holds, of an instance's `kv_tokens`."""
    return int(kv_tokens / _mean_context(wl) / dies)


def decode_sequences_per_die(scenario: Scenario) -> int:
    """Sequences of the workload's mean context whose KV one die of the scenario's decode pool holds, once weights,
    buffers and its batch's activations are placed: the bound the simulation checks batch_per_die against (a stack
    that admits by KV capacity, like TensorRT-LLM's, runs no more however high its max batch size)."""
    system, model = scenario.check()
    wl = scenario.workload.build(scenario.base_dir)
    colocated = scenario.mode != "disaggregated"
    pool = scenario.pools()["colocated" if colocated else "decode"]
    cost = PoolCosts(model, system, scenario.deployment(pool, model), scenario.experts, scenario.base_dir)
    kv_tokens = cost.kv_tokens_per_instance(tokens_in_flight_per_die(pool, scenario.mtp.depth, colocated))
    return _sequences_that_fit(kv_tokens, wl, pool.dies)


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
        # the table is the run's own: closed-loop issue times are written into it (no second copy)
        self.arrival = self.wl.arrival_time
        self.queued = np.full(n, np.nan)
        self.prefill_start = np.full(n, np.nan)
        self.prefill_end = np.full(n, np.nan)
        self.kv_ready = np.full(n, np.nan)
        self.admitted = np.full(n, np.nan)
        self.first_token = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.frontend = scenario.frontend
        self.egress = scenario.frontend.egress
        # plain floats and bools on the per-request path (pydantic and property lookups cost more)
        self._closed = self.wl.closed_loop
        self._fe_request = scenario.frontend.request_s
        self._fe_per_token = scenario.frontend.tokenize_s_per_token
        self.max_itl = np.full(n, np.nan)
        self.cached = np.zeros(n, dtype=np.int32)
        self.rng = np.random.default_rng(scenario.seed)
        self.kv_bytes_per_token = self.model.kv_bytes_per_token(scenario.precision.kv_cache)
        # Per-step records are typed arrays (8 bytes an entry, not a 32-byte Python float): a two-hour
        # run has hundreds of thousands of steps. Per pool: the start and duration of every step or
        # batch (utilisation, clipped to the window).
        self.step_start: dict[str, array] = {}
        self.step_dt: dict[str, array] = {}
        # tokens as spans (start, end, count): each step's tokens spread over the step that made them
        self.out_s, self.out_e, self.out_n = array("d"), array("d"), array("d")
        self.in_s, self.in_e, self.in_n = array("d"), array("d"), array("d")
        self.run_n = array("d")  # sequences decoding in each decode-pool step
        self.transfer_bytes = 0.0
        self.kv_occupancy_sum = 0.0
        self._next_issue = 0
        self.horizon = float("inf")
        self._drain_left = 0  # requests of the window still to finish once the horizon has passed
        pools = scenario.pools()
        self.costs: dict[str, PoolCosts] = {}
        for name, pool in pools.items():
            self.costs[name] = PoolCosts(self.model, self.system, scenario.deployment(pool, self.model),
                                         scenario.experts, scenario.base_dir)  # fmt: skip
            self.step_start[name] = array("d")
            self.step_dt[name] = array("d")
        self._build_decoders(pools[self.decode_pool])
        self._build_cache()

    # ------------------------------------------------------------ set-up
    def _tokens_in_flight_per_die(self, pool: PoolSpec) -> float:
        return tokens_in_flight_per_die(pool, self.sc.mtp.depth, self.decode_pool == "colocated")

    def _check_whole_prompts_fit(self, section: str, pool: PoolSpec, chunked: bool) -> int:
        """An instance's prompt tokens per step (tokens_per_die x dies); a stack that runs prompts whole
        cannot take one longer than that, which is the user's to fix."""
        budget = pool.tokens_per_die * pool.dies  # type: ignore[operator]
        longest = int(self.wl.input_len.max())
        if not chunked and longest > budget:
            other = " or set chunked_prefill = true" if section == "colocated" else ""  # a colocated pool may override
            raise CloudMatrixError(
                f"[{section}] the stack runs whole prompts but the longest, {longest:,} tokens, exceeds the step "
                f"budget of {budget:,} tokens (tokens_per_die x dies); raise tokens_per_die to at least "
                f"{-(-longest // pool.dies):,}{other}"
            )
        return budget

    def _build_decoders(self, dpool: PoolSpec) -> None:
        name, dcost = self.decode_pool, self.costs[self.decode_pool]
        max_len = int((self.wl.input_len + self.wl.output_len).max())
        kv_tokens = dcost.kv_tokens_per_instance(self._tokens_in_flight_per_die(dpool))
        if kv_tokens < max_len:
            raise CloudMatrixError(
                f"a {name} instance holds {kv_tokens:,.0f} KV tokens but the longest request needs "
                f"{max_len:,}; use more dies per instance, an INT8 KV cache, or shorter requests"
            )
        mean_len = _mean_context(self.wl)
        if dpool.batch_per_die * dpool.dies * mean_len > kv_tokens:  # type: ignore[operator]
            fits = _sequences_that_fit(kv_tokens, self.wl, dpool.dies)
            raise CloudMatrixError(
                f"[{name}] batch_per_die = {dpool.batch_per_die} does not fit: at this workload's mean "
                f"context of {mean_len:,.0f} tokens a die holds KV for about {fits} sequences; lower batch_per_die "
                f"to {fits} or less, use an INT8 KV cache, or more dies per instance"
            )
        self.kv_capacity_tokens = kv_tokens
        bs = self.sc.kv_block_size
        if (kv_tokens // bs) * bs < max_len:
            raise CloudMatrixError(
                f"kv_block_size = {bs:,} tokens: a {name} instance's {kv_tokens:,.0f} KV tokens make "
                f"{int(kv_tokens // bs)} blocks, too few for the longest request ({max_len:,} tokens); "
                "use a block size of a few hundred tokens at most"
            )
        ranks = dpool.dies // dpool.attn_tp
        slots = dpool.batch_per_die * dpool.dies  # type: ignore[operator]
        if dpool.batch_per_rank is not None:  # a stack's max batch per rank, not a multiple of the TP dies
            if dpool.batch_per_rank * ranks > slots:
                raise CloudMatrixError(
                    f"[{name}] batch_per_rank = {dpool.batch_per_rank} needs batch_per_die >= "
                    f"{-(-dpool.batch_per_rank // dpool.attn_tp)} (batch_per_die sizes the memory); raise batch_per_die"
                )
            slots = dpool.batch_per_rank * ranks
        self.decoders = [
            DecodeInstance(
                slots,
                KVBlockManager(int(kv_tokens // bs), bs, expected_requests=self.n),
                dies=ranks,  # attention-DP ranks; a TP group's dies share its sequences
                tp=dpool.attn_tp,
                routing=scheduling_for(dpool).dp_routing,  # the stack's spread over DP ranks
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
    def run(self, progress: Callable[[float], None] | None = None, *, drain: bool = True) -> SimResult:
        """Simulate to the scenario's duration (or until the workload ends). With `drain` (the default)
        the run goes on until the window's arrivals have finished, so the latency figures cover them
        all; without it, they cover those that finished by the duration (faster, biased low)."""
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
        self.horizon = end
        if drain and self.sc.duration is not None:
            # run on until the window's arrivals have all finished (the latency population)
            a = self.arrival
            pending = (a >= min(self.sc.warmup, end)) & (a <= end) & np.isnan(self.finish)
            self._drain_left = int(pending.sum())
            if self._drain_left:
                loop.run(end * DRAIN_LIMIT)
        return build_result(self, end)

    # ------------------------------------------------------------ requests
    def _arrive(self, r: int, t: float) -> None:
        """Request `r` leaves its client at `t`; the front end takes it from there."""
        if not self._closed and r + 1 < self.n:
            self.loop.at(float(self.arrival[r + 1]), self._arrive, r + 1)
        ingress = self._fe_request + self._fe_per_token * int(self.wl.input_len[r])  # FrontEndSpec.ingress
        if ingress > 0:
            self.loop.at(t + ingress, self._enter, r)
        else:
            self._enter(r, t)

    def _enter(self, r: int, t: float) -> None:
        """Request `r`, tokenised, reaches the router at `t`."""
        self.queued[r] = t
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
        """Request `r`'s last token reaches its client at `t`."""
        self.finish[r] = t
        if self._drain_left and self.sc.warmup <= self.arrival[r] <= self.horizon:
            self._drain_left -= 1
            if self._drain_left == 0:
                self.loop.stop()
        if self._closed and self._next_issue < self.n:
            k = self._next_issue
            self._next_issue += 1
            self.arrival[k] = t
            self._arrive(k, t)  # the client sends its next request at once

    def _one_token_done(self, r: int, t: float) -> None:
        """A one-token answer: the prefill's token is the whole output."""
        self.first_token[r] = t + self.egress
        self._finish(r, t + self.egress)

    # ------------------------------------------------------------ shared step pieces
    def _cache_read_time(self, tokens: int, dies: int) -> float:
        if tokens == 0:
            return 0.0
        # the pool's software path (block lookups, one copy per block and layer) plus the bytes (perf.ems)
        c, layers = self.sc.caching, self.model.layers
        per_layer = self.kv_bytes_per_token / layers
        return ems.kv_read_time(self.system, c.plane, tokens, layers, per_layer, c.block_size, dies)

    def _longest_chunk(self, batch: PrefillBatch) -> int:
        """An upper bound on the batch's longest prompt chunk: the longest uncached prompt in it."""
        idx = batch.requests
        if len(idx) == 1:
            return batch.tokens
        idx = np.asarray(idx)
        return int((self.wl.input_len[idx] - self.cached[idx]).max())

    def _prefill_started(self, batch: PrefillBatch, t: float, dt: float) -> None:
        """A prefill batch runs over [t, t + dt]: its prompt tokens count over that span."""
        idx = np.asarray(batch.requests)
        started = self.prefill_start[idx]
        self.prefill_start[idx] = np.where(np.isnan(started), t, started)
        self.in_s.append(t)
        self.in_e.append(t + dt)
        # computed tokens plus those read from the caching pool: every prompt token counts once
        self.in_n.append(batch.tokens + batch.cached_tokens)

    def _prompts_done(self, batch: PrefillBatch, t: float, dt: float) -> list[int]:
        """Prompts finished by a batch that ran over [t - dt, t]: their first output token exists now."""
        done = batch.finishing
        if not done:
            return done
        self.prefill_end[np.asarray(done)] = t
        self.out_s.append(t - dt)
        self.out_e.append(t)
        self.out_n.append(len(done))
        if self.cache is not None:
            for r in done:
                self.cache.insert(self.wl.block_hashes_for(r, self.cache.block_size))
        return done

    def _to_decode(self, d: DecodeInstance, r: int) -> None:
        """Queue request `r`, its KV on instance `d`, for a decode slot."""
        d.enqueue(r, int(self.wl.input_len[r]) + 1, int(self.wl.output_len[r]) - 1, _WAITING)

    def _to_decode_many(self, d: DecodeInstance, reqs: list[int]) -> None:
        """`_to_decode` for several requests, in order."""
        idx = np.asarray(reqs)
        d.enqueue_many(reqs, (self.wl.input_len[idx] + 1).tolist(), (self.wl.output_len[idx] - 1).tolist(), _WAITING)

    def _admit(self, d: DecodeInstance, t: float) -> None:
        """Fill free slots; each admitted request's first token streams to its client now."""
        k = d.admit(t)  # its next token's gap counts from now
        if k:
            ids = d.req[d.running - k : d.running]  # admitted requests are the newest live entries
            self.admitted[ids] = t
            self.first_token[ids] = t + self.egress

    def _book(self, pool: str, t: float, dt: float) -> None:
        self.step_start[pool].append(t)
        self.step_dt[pool].append(dt)

    def _book_step(self, pool: str, d: DecodeInstance, n: int, dt: float, t: float) -> None:
        """Account a step that starts at `t` with `n` sequences decoding and lasts `dt`."""
        d.busy = True
        self._book(pool, t, dt)
        self.kv_occupancy_sum += d.kv.occupancy * dt
        self.run_n.append(n)

    def _tokens_per_seq(self, n: int) -> np.ndarray:
        """1 + accepted MTP drafts per sequence: drafts are accepted in order until the first rejection.

        Draws are 16-bit integers from raw generator bytes (acceptance resolved to 1/65,536), several
        times cheaper than floats for the ~15,000 slots of a decode step."""
        m = self.sc.mtp
        if m.depth == 0 or m.acceptance == 0:
            return np.ones(n, dtype=np.int64)
        if m.acceptance == 1:
            return np.full(n, 1 + m.depth, dtype=np.int64)
        threshold = np.uint16(min(65535, round(m.acceptance * 65536)))
        nbytes = 2 * n * m.depth
        if nbytes % 8 == 0 and _LITTLE_ENDIAN:
            # the same bytes as rng.bytes(nbytes), whole 64-bit words of the stream, at a third of the cost
            u = self.rng.bit_generator.random_raw(nbytes // 8).view(np.uint16)
        else:
            u = np.frombuffer(self.rng.bytes(nbytes), dtype=np.uint16)
        if m.depth == 1:
            ok = (u < threshold).view(np.uint8)
            return ok + np.uint8(1)  # uint8 holds 1 or 2; the scheduler's minimum with int64 gives int64
        ok = (u.reshape(n, m.depth) < threshold).astype(np.int64)
        return 1 + np.cumprod(ok, axis=1).sum(axis=1)

    def _apply_decode_step(self, d: DecodeInstance, t: float, dt: float) -> None:
        """A decode step over [t - dt, t] ends: its tokens exist, finished requests leave."""
        total, finished, gaps = d.complete_step(self._tokens_per_seq(d.max_seqs), t)
        self.out_s.append(t - dt)
        self.out_e.append(t)
        self.out_n.append(total)
        if finished.size:
            self.max_itl[finished] = gaps
            client_t = t + self.egress
            for r in finished.tolist():
                self._finish(r, client_t)
