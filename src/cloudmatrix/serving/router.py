"""Routing between instances: which decode instance takes a prompt whose KV is ready, and which
colocated instance takes a new prompt. Pure choice over the instances' load, no clock.

Decode routing policies (`DecodeRouter`):
- "least_loaded": the instance with the fewest sequences running or waiting, what a router that
  watches load converges to (the twin's default);
- "round_robin": instances in turn, whatever their load: the Dynamo frontend's default
  `--router-mode round-robin` (Dynamo Router Guide, CLI arguments table, "--router-mode kv |
  default round-robin"; docs.nvidia.com/dynamo, Router Guide), which fronts the TensorRT-LLM
  disaggregated rows (their images are nvcr.io/nvidia/ai-dynamo/tensorrtllm-runtime).
In a closed loop whose clients equal the decode slots, round robin sends a finished client's next
request to the next instance in turn, not to the one that just freed a slot, so an instance can
receive more than its slots and queue while another idles.
"""

from __future__ import annotations

from collections.abc import Sequence

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.serving.decode_scheduler import DecodeInstance
from cloudmatrix.serving.prefill_scheduler import PrefillQueue

DECODE_ROUTING = ("least_loaded", "round_robin")


def pick_decode_instance(decoders: Sequence[DecodeInstance]) -> int:
    """The decode instance with the fewest sequences running or waiting (first among equals)."""
    if len(decoders) == 1:
        return 0
    loads = [d.running + d.queued for d in decoders]
    return loads.index(min(loads))


class DecodeRouter:
    """Picks the decode instance of each request under one of `DECODE_ROUTING` (round robin needs no
    loads, so it also picks prefill instances in turn: `pick(())`)."""

    def __init__(self, policy: str, instances: int):
        if policy not in DECODE_ROUTING:
            raise CloudMatrixError(f"unknown decode routing {policy!r}; use one of {', '.join(DECODE_ROUTING)}")
        if instances < 1:
            raise CloudMatrixError(f"a decode pool needs at least one instance, got {instances}")
        self.policy, self.instances = policy, instances
        self._next = 0  # round robin: the instance the next request goes to

    def pick(self, decoders: Sequence[DecodeInstance]) -> int:
        if self.policy == "round_robin":
            i = self._next
            self._next = (i + 1) % self.instances
            return i
        return pick_decode_instance(decoders)


def pick_colocated_instance(queues: Sequence[PrefillQueue]) -> int:
    """The colocated instance with the fewest prompt tokens queued (first among equals)."""
    if len(queues) == 1:
        return 0
    loads = [q.queued_tokens for q in queues]
    return loads.index(min(loads))
