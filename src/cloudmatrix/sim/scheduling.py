"""How a colocated instance schedules its steps: a pool's keys override its serving stack's defaults, the
`[scheduling]` section of the stack's profile (specs/catalog/backends/<name>.toml, each value with its source;
a pool without a backend takes the default profile's, specs/backend.py DEFAULT_BACKEND).

- `prefill`: "mixed" runs a prompt chunk inside a decode step, the step's token budget counting the
  decode tokens too (TensorRT-LLM's max_num_tokens, vLLM's max_num_batched_tokens); "separate" runs a
  prefill batch as its own forward with decode paused (SGLang unless --enable-mixed-chunk).
- `chunked`: a prompt may be split over steps; if not, a prompt runs whole in one step and waits
  until the step's budget holds it.
- `overlap`: the scheduler forms step n + 1 while step n runs (CPU work hidden behind the GPU), so a
  request that arrives during step n waits for step n + 2.
- `recv_interval`: new requests are taken in only every N decode steps (at once after a prefill step
  or when idle): SGLang's --scheduler-recv-interval and its SchedulerRecvSkipper weights (decode 1,
  any other forward 1,000, threshold N).
- `balance_timeout`: TensorRT-LLM's attention-DP balancing (attention_dp_config enable_balance,
  timeout_iters; PyExecutor._balance_adp_requests): with more than one attention-DP rank, prompts wait
  until every rank has one queued, for at most this many steps, and only while every rank is decoding.
  0: off (TensorRT-LLM's default, attention_dp_config unset).
- `batch_wait_iters`, `batch_wait_ratio`: TensorRT-LLM's delayed batching (batch_wait_timeout_iters,
  batch_wait_max_tokens_ratio; PyExecutor._waiting_requests): without attention DP, a step that would run
  prompts alongside decoding sequences runs the decode alone while its tokens are below ratio x the step budget,
  for at most `batch_wait_iters` such steps in a row. 0: off (TensorRT-LLM's default).
- `dp_routing` (decode and colocated pools, not a pool key): "least_loaded" gives a new request to the attention-DP
  rank with the fewest sequences; "round_robin" binds it to the next rank in turn at arrival, where it waits for that
  rank's slot (SGLang's DataParallelController, serving/decode_scheduler.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudmatrix.specs.backend import Scheduling, load_backend

if TYPE_CHECKING:
    from cloudmatrix.sim.scenario import PoolSpec

__all__ = ["RecvSkipper", "Scheduling", "scheduling_for"]


def scheduling_for(pool: PoolSpec) -> Scheduling:
    """The pool's scheduling: its backend's defaults, with any key the pool sets."""
    s = load_backend(pool.backend).scheduling
    keys = {"prefill": pool.prefill_mode, "chunked": pool.chunked_prefill, "overlap": pool.overlap,
            "recv_interval": pool.recv_interval, "balance_timeout": pool.balance_timeout,
            "batch_wait_iters": pool.batch_wait_iters, "batch_wait_ratio": pool.batch_wait_ratio}  # fmt: skip
    return s.model_copy(update={k: v for k, v in keys.items() if v is not None})


class RecvSkipper:
    """SGLang's SchedulerRecvSkipper (managers/scheduler_recv_skipper.py, 0.5.9 / 0.5.10.post1): each forward adds its
    weight, a decode forward 1 and any other (a prefill, a PREBUILT batch) 1,000; the scheduler polls for new
    requests when the sum reaches `interval` (--scheduler-recv-interval; 1: every step), and the sum restarts at
    every poll, whether anything came or not. One per scheduler (colocated instance, disaggregated decode worker)."""

    PREFILL_WEIGHT = 1000

    def __init__(self, interval: int, count: int = 0):
        self.interval, self.count = interval, count

    def add(self, prefill: bool) -> None:
        """A forward ran (or, under SGLang's overlap loop, was launched): its weight counts."""
        self.count += self.PREFILL_WEIGHT if prefill else 1

    @property
    def due(self) -> bool:
        return self.count >= self.interval

    def polled(self) -> None:
        self.count = 0

    def force(self) -> None:
        """An idle scheduler polls continuously: the next check polls."""
        self.count = self.interval
