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

Several routers (`routers` > 1): srt-slurm's multi-node jobs start up to ten Dynamo frontends, each
with its own round-robin pointer, behind one nginx (src/srtctl/cli/mixins/frontend_stage.py
`_compute_frontend_topology`: nginx on the head node, a frontend on each other worker node up to
`num_additional_frontends` + 1 = 10; NVIDIA/srt-slurm deb1dfd9). nginx round-robins over the
frontends per worker process (templates/nginx.conf.j2: `worker_processes auto`, an upstream without
a shared `zone`, so every worker keeps its own counter), and which worker takes a connection is the
kernel's choice; the twin draws each request's frontend at random and advances that frontend's
pointer. The decode instances then no longer see one global rotation: two requests in a row can
land on the same instance however many slots the others have free. A policy that watches load
(least-loaded, and the colocated instance choice) sees the same loads from every router, so the
number of routers does not change its picks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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
    loads, so it also picks prefill instances in turn: `pick(())`). Round robin over `routers`
    independent pointers draws the router of each pick from `rng` (the module docstring says why)."""

    def __init__(self, policy: str, instances: int, routers: int = 1, rng: np.random.Generator | None = None):
        if policy not in DECODE_ROUTING:
            raise CloudMatrixError(f"unknown decode routing {policy!r}; use one of {', '.join(DECODE_ROUTING)}")
        if instances < 1:
            raise CloudMatrixError(f"a decode pool needs at least one instance, got {instances}")
        if routers < 1:
            raise CloudMatrixError(f"routers must be at least 1, got {routers}; use 1 for a single router")
        if routers > 1 and rng is None:
            raise CloudMatrixError(
                f"{routers} routers need a random generator to spread requests over them; pass rng "
                "(a numpy Generator, e.g. np.random.default_rng(seed))"
            )
        self.policy, self.instances = policy, instances
        self._next = [0] * routers  # round robin: the instance each router sends its next request to
        self._rng = rng

    def pick(self, decoders: Sequence[DecodeInstance]) -> int:
        if self.policy == "round_robin":
            r = 0 if len(self._next) == 1 else int(self._rng.integers(len(self._next)))  # type: ignore[union-attr]
            i = self._next[r]
            self._next[r] = (i + 1) % self.instances
            return i
        return pick_decode_instance(decoders)


def pick_colocated_instance(queues: Sequence[PrefillQueue]) -> int:
    """The colocated instance with the fewest prompt tokens queued (first among equals)."""
    if len(queues) == 1:
        return 0
    loads = [q.queued_tokens for q in queues]
    return loads.index(min(loads))
