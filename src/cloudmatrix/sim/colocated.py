"""Colocated serving: each instance runs prefill and decode on the same dies; a finished prompt starts
decoding where it ran. How the steps are formed is the pool's serving stack's (sim/scheduling.py):
a prompt chunk mixed into a decode step within one token budget (TensorRT-LLM, vLLM) or a prefill
batch as its own step with decode paused (SGLang); prompts chunked or whole; the next step formed
while the current one runs (overlap); new requests polled every step or every N decode steps."""

from __future__ import annotations

from cloudmatrix.serving.prefill_scheduler import PrefillBatch, PrefillQueue
from cloudmatrix.serving.router import pick_colocated_instance
from cloudmatrix.sim.scenario import Scenario
from cloudmatrix.sim.scheduling import RecvSkipper, scheduling_for
from cloudmatrix.sim.serving_sim import ServingSimulation


class ColocatedSimulation(ServingSimulation):
    decode_pool = "colocated"

    def __init__(self, scenario: Scenario):
        super().__init__(scenario)
        pool = scenario.colocated
        assert pool is not None and pool.tokens_per_die is not None
        self.costs["colocated"].check_prefill_fit(pool.tokens_per_die, "the colocated chunked-prefill budget")
        self.sched = s = scheduling_for(pool)
        budget = self._check_whole_prompts_fit("colocated", pool, s.chunked)
        self.queues = [PrefillQueue(budget, pool.policy) for _ in range(pool.instances)]
        # prompts that reached an instance but that its scheduler has not taken in yet
        self.inbox: list[list[tuple[int, int, int]]] = [[] for _ in range(pool.instances)]
        # the first poll takes what is there
        self.recv = [RecvSkipper(s.recv_interval, count=s.recv_interval) for _ in range(pool.instances)]
        self._decode_tokens = 1 + scenario.mtp.depth  # budget tokens one decoding sequence takes in a mixed step
        self._ranks = pool.dies // pool.attn_tp  # attention-DP ranks of an instance
        self.held_steps = [0] * pool.instances  # steps prompts have been held for attention-DP balance
        self.batch_waits = [0] * pool.instances  # steps prompts have been held by delayed batching

    def _route(self, r: int, length: int, cached: int, t: float) -> None:
        i = pick_colocated_instance(self.queues)
        if self.decoders[i].busy:
            self.inbox[i].append((r, length, cached))
        else:  # an idle scheduler polls continuously: it takes the prompt and starts at once
            self.queues[i].enqueue(r, length, cached)
            self._start_step(i, t)

    def _receive(self, i: int) -> None:
        """The scheduler polls for new requests when the interval allows (the count restarts at every poll,
        whether anything came or not): the inbox joins the prefill queue."""
        if not self.recv[i].due:
            return
        self.recv[i].polled()
        q = self.queues[i]
        for item in self.inbox[i]:
            q.enqueue(*item)
        self.inbox[i].clear()

    def _start_step(self, i: int, t: float, retry: bool = True) -> None:
        d, q, s = self.decoders[i], self.queues[i], self.sched
        if not s.overlap:
            self._receive(i)  # the step is formed now, from everything received up to now
        self._admit(d, t)
        n = d.running
        batch = None
        if s.balance_timeout and self._ranks > 1 and self._hold_for_balance(i, n):
            pass  # the prompts wait for the ranks to balance
        elif s.prefill == "separate":
            # a prefill batch, when there is one, runs alone; it admits only prompts that will have a running
            # slot (SGLang's PrefillAdder stops at max_running_requests)
            room = d.max_seqs - n - d.queued
            batch = q.next_batch(chunked=s.chunked, new_requests=max(room, 0))
        else:
            budget = q.token_budget - n * self._decode_tokens  # decode tokens count against the step budget
            if budget > 0 and not self._hold_for_batch(i, n, budget):
                batch = q.next_batch(budget, chunked=s.chunked)
        decoding = n > 0 and (batch is None or s.prefill == "mixed")
        if s.overlap:
            # with overlap this step was formed while the previous one ran: what arrived since waits a step.
            # SGLang's skipper weighs the forward launched last, the one the GPU runs at the poll (0.5.9 / 0.5.10.post1
            # scheduler.py event_loop_overlap + recv_requests): this step counts before its own poll
            if batch is not None or decoding:
                self.recv[i].add(prefill=batch is not None)
            self._receive(i)
        if not decoding and batch is None:
            d.busy = False
            if retry and (self.inbox[i] or len(q)):  # idle: the scheduler keeps polling, takes what came at once
                self.recv[i].force()
                self._receive(i)
                self._start_step(i, t, retry=False)
            return
        cost = self.costs["colocated"]
        if batch is None:
            dt = cost.decode_time(*d.busiest_die())
        elif decoding:  # the chunk and the decode batch in one forward (perf/mixed.py)
            dt = cost.mixed_time(*d.busiest_die(), batch.tokens, batch.context_sum, self._longest_chunk(batch))
        else:
            dt = cost.prefill_time(batch.tokens, batch.context_sum, self._longest_chunk(batch))
        if batch is not None:
            dt += self._cache_read_time(batch.cached_tokens, cost.dep.dies)
            self._prefill_started(batch, t, dt)
        self._book_step("colocated", d, n if decoding else 0, dt, t)
        self.loop.at(t + dt, self._step_done, (i, batch, decoding, dt))

    def _hold_for_balance(self, i: int, n: int) -> bool:
        """TensorRT-LLM's attention-DP balance, once per step: prompts run when every rank has one (the queue
        holds one per rank); otherwise the step counts, and they run anyway when the count reaches
        balance_timeout (it then restarts, whether prompts were waiting or not) or some rank is not decoding."""
        if len(self.queues[i]) >= self._ranks:
            self.held_steps[i] = 0
            return False
        self.held_steps[i] += 1
        if self.held_steps[i] >= self.sched.balance_timeout or n < self._ranks:
            self.held_steps[i] = 0
            return False
        return True

    def _hold_for_batch(self, i: int, n: int, budget: int) -> bool:
        """TensorRT-LLM's delayed batching (batch_wait_timeout_iters, batch_wait_max_tokens_ratio): PyExecutor.
        _schedule calls _waiting_requests (tensorrt_llm/_torch/pyexecutor/py_executor.py, the 1.2.0rc-era source)
        only without attention DP and on a step scheduling prompts beside generation requests. The step's tokens are
        its prompts' plus one per decoding token (1 + drafts); below ratio x max_num_tokens the prompts wait, for at
        most batch_wait_iters held steps; the count restarts only when a check lets them run. The prompts the step
        would take are the queue up to the budget left: exact when they all fit; a longer queue counts as a full
        step, exact for chunked prompts (whole prompts fall short only past one longer than (1 - ratio) x budget)."""
        s, q = self.sched, self.queues[i]
        if not s.batch_wait_iters or not s.batch_wait_ratio or self._ranks > 1 or n == 0 or not len(q):
            return False
        tokens = min(q.queued_tokens, budget) + n * self._decode_tokens
        if self.batch_waits[i] < s.batch_wait_iters and tokens < s.batch_wait_ratio * q.token_budget:
            self.batch_waits[i] += 1
            return True
        self.batch_waits[i] = 0
        return False

    def _step_done(self, arg: tuple[int, PrefillBatch | None, bool, float], t: float) -> None:
        i, batch, decoded, dt = arg
        d = self.decoders[i]
        # the poll that follows: a decode step counts 1 towards the interval, any other forward passes it (under
        # overlap the step was counted at its launch, in _start_step)
        if not self.sched.overlap:
            self.recv[i].add(prefill=batch is not None)
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
