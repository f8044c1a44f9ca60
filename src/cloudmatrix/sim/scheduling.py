"""How a colocated instance schedules its steps, per serving stack: a pool's keys override its backend's
documented defaults.

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

Backend defaults and their sources:
- trtllm: TensorRT-LLM LLM API (PyTorch backend) `disable_overlap_scheduler` False,
  `enable_chunked_prefill` False; context requests join generation steps up to max_num_tokens.
- sglang: SGLang server arguments `disable_overlap_schedule` False, `enable_mixed_chunk` False,
  chunked prefill on (`chunked_prefill_size`), `scheduler_recv_interval` 1.
- vllm: vLLM V1 always chunks and mixes prefill into decode steps; async scheduling is opt-in.
- none given: the twin's generic engine, which is vLLM's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloudmatrix.sim.scenario import PoolSpec


@dataclass(frozen=True)
class Scheduling:
    prefill: str  # "mixed" or "separate"
    chunked: bool
    overlap: bool
    recv_interval: int
    balance_timeout: int = 0


BACKEND_SCHEDULING: dict[str | None, Scheduling] = {
    None: Scheduling("mixed", True, False, 1),
    "vllm": Scheduling("mixed", True, False, 1),
    "trtllm": Scheduling("mixed", False, True, 1),
    "sglang": Scheduling("separate", True, True, 1),
}


def scheduling_for(pool: PoolSpec) -> Scheduling:
    """The pool's scheduling: its backend's defaults, with any key the pool sets."""
    s = BACKEND_SCHEDULING[pool.backend]
    keys = {"prefill": pool.prefill_mode, "chunked": pool.chunked_prefill, "overlap": pool.overlap,
            "recv_interval": pool.recv_interval, "balance_timeout": pool.balance_timeout}  # fmt: skip
    return replace(s, **{k: v for k, v in keys.items() if v is not None})
