"""Prefill scheduler: token-budget packing, chunking, causal context sums, policies, least-loaded instances."""

import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.serving.prefill_scheduler import PrefillQueue, PrefillScheduler


def test_packs_up_to_the_budget_and_chunks_the_rest():
    q = PrefillQueue(token_budget=1000)
    q.enqueue(0, 600, 0)
    q.enqueue(1, 600, 0)
    b = q.next_batch()
    assert b.requests == [0, 1] and b.finishing == [0] and b.tokens == 1000
    b = q.next_batch()
    assert b.requests == [1] and b.finishing == [1] and b.tokens == 200
    assert q.next_batch() is None and q.queued_tokens == 0


def test_context_sum_is_the_causal_attention_work():
    q = PrefillQueue(token_budget=10)
    q.enqueue(0, 4, 0)
    b = q.next_batch()
    assert b.context_sum == 1 + 2 + 3 + 4
    # a cached prefix is skipped but still attended to
    q.enqueue(1, 4, 2)
    b = q.next_batch()
    assert b.tokens == 2 and b.context_sum == 3 + 4 and b.cached_tokens == 2


def test_shortest_first_serves_short_prompts_before_long_ones():
    fcfs, srpt = PrefillQueue(100, "fcfs"), PrefillQueue(100, "shortest")
    for q in (fcfs, srpt):
        q.enqueue(0, 1000, 0)
        q.enqueue(1, 50, 0)
        q.enqueue(2, 30, 0)
    assert fcfs.next_batch().requests == [0]
    assert srpt.next_batch().requests == [2, 1, 0]
    # the chunked long prompt is re-keyed by what it has left, and a later short one still goes first
    srpt.enqueue(3, 10, 0)
    assert srpt.next_batch().requests[0] == 3


def test_unknown_policy_is_rejected():
    with pytest.raises(CloudMatrixError, match="unknown prefill policy"):
        PrefillQueue(10, "random")


def test_arrivals_go_to_the_least_loaded_instance():
    s = PrefillScheduler(instances=3, token_budget=100)
    assert [s.assign(r, 50, 0) for r in range(3)] == [0, 1, 2]
    assert s.assign(3, 10, 0) in (0, 1, 2)
    assert s.assign(4, 10, 0) != s.queues.index(max(s.queues, key=lambda q: q.queued_tokens))
