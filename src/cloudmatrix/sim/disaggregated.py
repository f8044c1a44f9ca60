"""Disaggregated serving (CloudMatrix-Infer): a prefill pool computes prompts, their KV moves to
the decode pool over the scale-out (RDMA) plane, the decode pool generates the rest."""

from __future__ import annotations

from cloudmatrix.perf import comm
from cloudmatrix.serving.prefill_scheduler import PrefillBatch, PrefillScheduler
from cloudmatrix.serving.router import pick_decode_instance
from cloudmatrix.sim.scenario import Scenario
from cloudmatrix.sim.serving_sim import ServingSimulation


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

    def _route(self, r: int, length: int, cached: int, t: float) -> None:
        q = self.prefill.assign(r, length, cached)
        if not self.prefill.queues[q].busy:
            self._start_prefill(q, t)

    # ------------------------------------------------------------ prefill pool
    def _start_prefill(self, q: int, t: float) -> None:
        queue = self.prefill.queues[q]
        batch = queue.next_batch()
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
            self.loop.at(t + comm.transfer(self._xfer_fabric, self._xfer_bw, nbytes), self._transfer_done, reqs)
        self._start_prefill(q, t)

    # ------------------------------------------------------------ decode pool
    def _transfer_done(self, reqs: list[int], t: float) -> None:
        self.kv_ready[reqs] = t
        if len(self.decoders) == 1:  # the common layout: queue them all at once
            self._to_decode_many(self.decoders[0], reqs)
        else:
            for r in reqs:
                self._to_decode(self.decoders[pick_decode_instance(self.decoders)], r)
        for j, d in enumerate(self.decoders):
            if not d.busy and d.queued:
                self._start_decode(j, t)

    def _start_decode(self, j: int, t: float) -> None:
        d = self.decoders[j]
        self._admit(d, t)
        n = d.running
        if n == 0:
            d.busy = False
            return
        dt = self.costs["decode"].decode_time(*d.busiest_die())
        self._book_step("decode", d, n, dt, t)
        self.loop.at(t + dt, self._decode_done, (j, dt))

    def _decode_done(self, arg: tuple[int, float], t: float) -> None:
        j, dt = arg
        self._apply_decode_step(self.decoders[j], t, dt)
        self._start_decode(j, t)
