"""Routing between instances: which decode instance takes a prompt whose KV is ready, and which
colocated instance takes a new prompt. Pure choice over the instances' load, no clock."""

from __future__ import annotations

from collections.abc import Sequence

from cloudmatrix.serving.decode_scheduler import DecodeInstance
from cloudmatrix.serving.prefill_scheduler import PrefillQueue


def pick_decode_instance(decoders: Sequence[DecodeInstance]) -> int:
    """The decode instance with the fewest sequences running or waiting (first among equals)."""
    if len(decoders) == 1:
        return 0
    loads = [d.running + d.queued for d in decoders]
    return loads.index(min(loads))


def pick_colocated_instance(queues: Sequence[PrefillQueue]) -> int:
    """The colocated instance with the fewest prompt tokens queued (first among equals)."""
    if len(queues) == 1:
        return 0
    loads = [q.queued_tokens for q in queues]
    return loads.index(min(loads))
