"""Disaggregated serving (CloudMatrix-Infer): a prefill pool computes prompts, their KV moves to
the decode pool over the scale-out (RDMA) plane, the decode pool generates the rest.

How a request crosses from prefill to decode, and when its client sees the first token, is the
serving stack's protocol: the `[handoff]` section of the decode pool's backend profile
(specs/catalog/backends/<name>.toml, each value with its source; no backend: the default profile's,
specs/backend.py DEFAULT_BACKEND). Whether a prefill step may split a prompt is the prefill pool's own.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cloudmatrix.perf import comm
from cloudmatrix.serving.prefill_scheduler import PrefillBatch, PrefillScheduler
from cloudmatrix.serving.router import DecodeRouter
from cloudmatrix.sim.scenario import Scenario
from cloudmatrix.sim.scheduling import RecvSkipper, scheduling_for
from cloudmatrix.sim.serving_sim import ServingSimulation
from cloudmatrix.specs.backend import load_backend


class _Load(NamedTuple):
    """A decode instance's load as a router that picks at arrival sees it (serving/router.py reads these two)."""

    running: int
    queued: int  # waiting for a slot, or routed with its KV still to come


class DisaggregatedSimulation(ServingSimulation):
    decode_pool = "decode"

    def __init__(self, scenario: Scenario):
        super().__init__(scenario)
        p = scenario.prefill
        assert p is not None and p.tokens_per_die is not None
        self.costs["prefill"].check_prefill_fit(p.tokens_per_die, f"prefill of {p.tokens_per_die} tokens per die")
        self.prefill = PrefillScheduler(p.instances, p.tokens_per_die * p.dies, p.policy)
        # P -> D KV transfer over the scale-out (RDMA) plane from the die that computed the prompt
        out = self.system.spec.scale_out
        self._xfer_bw = comm.die_bandwidth(self.system, out)
        self._xfer_fabric = out
        d = scenario.decode
        assert d is not None
        self.handoff = load_backend(d.backend).handoff
        # the front end's routers pick with their own generator, so the workload's draws stay as they are
        routers, route_rng = scenario.frontend.routers, np.random.default_rng([scenario.seed, 1])
        self.router = DecodeRouter(self.handoff.routing, d.instances, routers, route_rng)
        if self.handoff.pull_after_admission:
            self._pull_s = np.zeros(self.n)  # each request's KV transfer time, run once it is admitted
            self._pending: list[list[int]] = [[] for _ in self.decoders]  # admitted, first step not yet run
        # a round-robin front end takes prefill instances in turn too (trtllm.toml [handoff] routing: Dynamo)
        rr = self.handoff.routing == "round_robin"
        self._prefill_rr = DecodeRouter("round_robin", p.instances, routers, route_rng) if rr else None
        if self.handoff.prefill_after_decode_intake:
            # the decode instance is chosen at arrival; its scheduler takes new requests in at a poll, and only then
            # may the prefill start the prompt (sglang.toml [handoff] prefill_after_decode_intake)
            self._decode_of = np.full(self.n, -1, dtype=np.int64)
            self.decode_intake = np.full(self.n, np.nan)  # when the decode scheduler took each request in
            self._intake: list[list[tuple[int, int, int]]] = [[] for _ in self.decoders]
            self._recv = [RecvSkipper(scheduling_for(d).recv_interval) for _ in self.decoders]
            self._reserved = [0] * len(self.decoders)  # routed, KV not yet arrived: a load the router sees
        # the prefill pool's own stack decides whether its steps may split a prompt (its [scheduling] chunked)
        self._chunked = load_backend(p.backend).scheduling.chunked
        self._check_whole_prompts_fit("prefill", p, self._chunked)

    def _route(self, r: int, length: int, cached: int, t: float) -> None:
        if self.handoff.prefill_after_decode_intake:
            # the router counts a request from the moment it routes it (its prompt may still be in prefill)
            seen = [_Load(d.running, d.queued + k) for d, k in zip(self.decoders, self._reserved, strict=True)]
            j = self.router.pick(seen)
            self._decode_of[r] = j
            self._reserved[j] += 1
            if self.decoders[j].busy:  # taken in at the decode scheduler's next poll
                self._intake[j].append((r, length, cached))
                return
        self._to_prefill(r, length, cached, t)  # an idle decode scheduler polls continuously: at once

    def _decode_intake(self, j: int, t: float) -> None:
        """Decode instance j's scheduler polls: what came since its last poll is taken in, its KV reserved, and
        the prefill may start those prompts."""
        self._recv[j].polled()
        waiting, self._intake[j] = self._intake[j], []
        for item in waiting:
            self._to_prefill(*item, t)

    def _to_prefill(self, r: int, length: int, cached: int, t: float) -> None:
        if self.handoff.prefill_after_decode_intake:
            self.decode_intake[r] = t
        if self._prefill_rr is None:
            q = self.prefill.assign(r, length, cached)  # least queued work
        else:  # in turn, whatever their queues
            q = self._prefill_rr.pick(())
            self.prefill.queues[q].enqueue(r, length, cached)
        if not self.prefill.queues[q].busy:
            self._start_prefill(q, t)

    # ------------------------------------------------------------ prefill pool
    def _start_prefill(self, q: int, t: float) -> None:
        queue = self.prefill.queues[q]
        batch = queue.next_batch(chunked=self._chunked)
        if batch is None:
            queue.busy = False
            return
        cost = self.costs["prefill"]
        dt = cost.prefill_time(batch.tokens, batch.context_sum, self._longest_chunk(batch))
        dt += self._cache_read_time(batch.cached_tokens, cost.dep.dies)
        queue.busy = True
        self._book("prefill", t, dt)
        self._prefill_started(batch, t, dt)
        self.loop.at(t + dt, self._prefill_done, (q, batch, dt))

    def _prefill_done(self, arg: tuple[int, PrefillBatch, float], t: float) -> None:
        q, batch, dt = arg
        # KV of finished prompts goes to the decode pool over RDMA; prompts of one length land together
        by_length: dict[int, list[int]] = {}
        for r in self._prompts_done(batch, t, dt):
            if self.wl.output_len[r] <= 1:
                self._one_token_done(r, t)
            else:
                by_length.setdefault(int(self.wl.input_len[r]), []).append(r)
        for length, reqs in by_length.items():
            nbytes = length * self.kv_bytes_per_token
            self.transfer_bytes += nbytes * len(reqs)
            xfer = comm.transfer(self._xfer_fabric, self._xfer_bw, nbytes)
            if self.handoff.pull_after_admission:  # routed now; the decode worker pulls the KV once admitted
                self._pull_s[reqs] = xfer
                self._transfer_done(reqs, t)
            else:
                self.loop.at(t + xfer, self._transfer_done, reqs)
        self._start_prefill(q, t)

    # ------------------------------------------------------------ decode pool
    def _transfer_done(self, reqs: list[int], t: float) -> None:
        self.kv_ready[reqs] = t
        if self.handoff.prefill_after_decode_intake:
            for r in reqs:
                self._reserved[int(self._decode_of[r])] -= 1
        if len(self.decoders) == 1:  # the common layout: queue them all at once
            self._to_decode_many(self.decoders[0], reqs)
        elif self.handoff.prefill_after_decode_intake:  # to the instance that reserved its KV at intake
            for r in reqs:
                self._to_decode(self.decoders[int(self._decode_of[r])], r)
        else:
            for r in reqs:
                self._to_decode(self.decoders[self.router.pick(self.decoders)], r)
        for j, d in enumerate(self.decoders):
            if not d.busy and d.queued:
                self._start_decode(j, t)

    def _start_decode(self, j: int, t: float) -> None:
        d = self.decoders[j]
        before = d.running
        self._admit(d, t)
        n = d.running
        if n == 0:
            d.busy = False
            if self.handoff.prefill_after_decode_intake and self._intake[j]:
                self._decode_intake(j, t)  # idle: the scheduler polls at once
            return
        if self.handoff.pull_after_admission:
            self._start_pulling_step(j, d, before, n, t)
            return
        if n > before and self.handoff.prefill_after_decode_intake and self._intake[j]:
            self._decode_intake(j, t)  # the PREBUILT forward that took them in weighs 1,000: the next loop polls
        dt = self.costs["decode"].decode_time(*d.busiest_die())
        if n > before and self.handoff.first_token_after_step:
            # the admitted requests (the newest live entries) see their first token when this step ends
            self.first_token[d.req[before:n]] = t + dt + self.egress
        self._book_step("decode", d, n, dt, t)
        self.loop.at(t + dt, self._decode_done, (j, dt))

    def _start_pulling_step(self, j: int, d, before: int, n: int, t: float) -> None:
        """A step of a worker that pulls KV after admitting: the newly admitted start their transfer now and
        sit out every step that starts before it completes; their first token leaves with their first step."""
        pending = self._pending[j]
        if n > before:
            new = d.req[before:n]
            d.ready_at[before:n] = t + self._pull_s[new]
            self.kv_ready[new] = t + self._pull_s[new]
            pending.extend(new.tolist())
        d.begin_step(t)
        per_die, ctx = d.busiest_die()
        if per_die == 0:  # every sequence is still receiving its KV: wake when the first transfer lands
            d.busy = True
            self.loop.at(float(d.ready_at[:n].min()), self._start_decode, j)
            return
        dt = self.costs["decode"].decode_time(per_die, ctx)
        if pending:
            joining = [r for r in pending if self.kv_ready[r] <= t]
            if joining:
                self._pending[j] = [r for r in pending if self.kv_ready[r] > t]
                if self.handoff.first_token_after_step:
                    self.first_token[joining] = t + dt + self.egress
                else:
                    self.first_token[joining] = t + self.egress
        self._book_step("decode", d, n, dt, t)
        self.loop.at(t + dt, self._decode_done, (j, dt))

    def _decode_done(self, arg: tuple[int, float], t: float) -> None:
        j, dt = arg
        self._apply_decode_step(self.decoders[j], t, dt)
        if self.handoff.prefill_after_decode_intake:
            self._recv[j].add(prefill=False)  # a decode forward
            if self._recv[j].due:
                self._decode_intake(j, t)
        self._start_decode(j, t)
