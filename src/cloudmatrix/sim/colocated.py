"""Colocated serving (the SGLang/vLLM default): each instance mixes a chunk of prefill into its
decode steps (chunked prefill); a finished prompt starts decoding on the same instance."""

from __future__ import annotations

from cloudmatrix.serving.prefill_scheduler import PrefillBatch, PrefillQueue
from cloudmatrix.serving.router import pick_colocated_instance
from cloudmatrix.sim.scenario import PoolSpec, Scenario
from cloudmatrix.sim.serving_sim import ServingSimulation


class ColocatedSimulation(ServingSimulation):
    decode_pool = "colocated"

    def __init__(self, scenario: Scenario):
        super().__init__(scenario)
        pool = scenario.colocated
        assert pool is not None and pool.tokens_per_die is not None
        self.costs["colocated"].check_prefill_fit(pool.tokens_per_die, "the colocated chunked-prefill budget")
        self.queues = [PrefillQueue(pool.tokens_per_die * pool.dies, pool.policy) for _ in range(pool.instances)]

    def _tokens_in_flight_per_die(self, pool: PoolSpec) -> float:
        return super()._tokens_in_flight_per_die(pool) + pool.tokens_per_die  # type: ignore[operator]

    def _route(self, r: int, length: int, cached: int, t: float) -> None:
        i = pick_colocated_instance(self.queues)
        self.queues[i].enqueue(r, length, cached)
        if not self.decoders[i].busy:
            self._start_step(i, t)

    def _start_step(self, i: int, t: float) -> None:
        d, q = self.decoders[i], self.queues[i]
        self._admit(d, t)
        n = d.running
        batch = q.next_batch()
        if n == 0 and batch is None:
            d.busy = False
            return
        cost = self.costs["colocated"]
        # a mixed step runs the decode batch and the prefill chunk; their costs add
        dt = cost.decode_time(*d.busiest_die()) if n else 0.0
        if batch is not None:
            dt += cost.prefill_time(batch.tokens, batch.context_sum, self._longest_chunk(batch))
            dt += self._cache_read_time(batch.cached_tokens, cost.dep.dies)
            self._prefill_started(batch, t, dt)
        self._book_step("colocated", d, n, dt, t)
        self.loop.at(t + dt, self._step_done, (i, batch, n > 0, dt))

    def _step_done(self, arg: tuple[int, PrefillBatch | None, bool, float], t: float) -> None:
        i, batch, decoded, dt = arg
        d = self.decoders[i]
        if decoded:
            self._apply_decode_step(d, t, dt)
        if batch is not None:
            for r in self._prompts_done(batch, t, dt):
                self.kv_ready[r] = t  # the KV is already on this instance
                if self.wl.output_len[r] <= 1:
                    self._one_token_done(r, t)
                else:
                    self._to_decode(d, r)
        self._start_step(i, t)
