"""The engine-facing control plane: block ids and references, prefix blocks, the colocated step loop."""

from __future__ import annotations

import numpy as np
import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.serving.decode_scheduler import DecodeInstance
from cloudmatrix.serving.instance_scheduler import InstanceScheduler
from cloudmatrix.serving.kv_blocks import KVBlockManager
from cloudmatrix.serving.prefix_cache import PrefixCache, hash_token_blocks
from cloudmatrix.serving.request import FinishReason, Request, Status


def test_block_ids_are_handed_out_shared_and_returned():
    kv = KVBlockManager(6, 4, block_ids=True)
    assert kv.allocate(0, 9) and kv.table(0) == [0, 1, 2]
    assert not kv.allocate_many(np.array([1, 2]), np.array([8, 8]))  # 2 + 2 > 3 free: nothing taken
    assert kv.num_free == 3 and kv.table(1) == [] and kv.table(2) == []
    kv.share(1, kv.table(0)[:2])  # a prefix hit on request 0's first two blocks
    assert kv.allocate(1, 12) and kv.table(1) == [0, 1, 3] and kv.held(1) == 3
    assert kv.num_used == 4 and kv.refs(0) == 2
    assert kv.free(0) == 1  # only block 2 was request 0's alone
    assert kv.refs(0) == 1 and kv.num_used == 3
    kv.hold([3])  # the prefix cache keeps block 3 alive after its request
    assert kv.free(1) == 2 and kv.num_free == 5 and kv.refs(3) == 1
    assert kv.release([3]) == 1 and kv.num_free == 6
    assert kv.allocate(4, 5) and len(set(kv.table(4))) == 2 and kv.num_free == 4
    kept = kv.table(4)[0]
    assert kv.shrink(4, 3) == 1 and kv.table(4) == [kept] and kv.num_free == 5


def test_prefix_cache_names_blocks_and_evicts_only_what_it_may():
    cache = PrefixCache(capacity_blocks=3, block_size=2)
    h = hash_token_blocks([1, 2, 3, 4, 5, 6, 7, 8], 2)
    added, evicted = cache.insert_blocks(h, [10, 11, 12, 13])  # the 4th does not fit: chains keep heads
    assert added == [12, 11, 10] and evicted == []
    assert cache.match(h) == [10, 11, 12] and cache.hit_blocks == 3
    added, evicted = cache.insert_blocks(h[:2], [20, 21])  # already there: the old blocks stay named
    assert added == [] and cache.match(h[:2], record=False) == [10, 11]
    assert cache.evict(2, lambda b: b != 12) == [11, 10]  # least recently used (tails) first; 12 is in use
    assert cache.match(h) == [] and len(cache) == 1


def test_decode_instance_ends_requests_early_and_frees_their_blocks():
    kv = KVBlockManager(10, 4)
    d = DecodeInstance(4, kv)
    for r in range(3):
        d.enqueue(r, 4, 8, 0.0)
    d.admit()
    assert kv.num_used == 9
    assert sorted(d.finish([1, 7]).tolist()) == [1]
    assert d.running == 2 and kv.num_used == 6 and kv.held(1) == 0
    d.enqueue(5, 4, 8, 0.0)  # waiting (no blocks yet) and then aborted from the queue
    d.enqueue(6, 30, 8, 0.0)
    assert d.admit() == 1 and d.queued == 1
    assert d.finish([6]).tolist() == [6] and d.queued == 0
    total, done, _ = d.complete_step(np.full(4, 8))
    assert sorted(done.tolist()) == [0, 2, 5] and kv.num_used == 0 and total == 24


def drive(s: InstanceScheduler, pick=lambda req, k: 7):
    """Run the scheduler to the end with a fake model that always samples `pick(req, step)`."""
    ranges: dict[int, list[tuple[int, int]]] = {}
    steps = 0
    while s.has_unfinished():
        b = s.schedule()
        assert not b.empty
        for r, st, e in zip(b.prefill, b.starts, b.ends, strict=True):
            ranges.setdefault(r.id, []).append((st, e))
        assert sum(e - st for st, e in zip(b.starts, b.ends, strict=True)) + len(b.decode) <= s.prefill.token_budget
        s.complete(
            b, [[pick(r, steps)] for r in b.decode], [pick(r, steps) if b.finishing(k) else None for k, r in
                                                      enumerate(b.prefill)]
        )  # fmt: skip
        steps += 1
        assert steps < 500
    return ranges


def test_chunked_prefill_covers_each_prompt_once_then_decodes_to_the_end():
    kv = KVBlockManager(64, 4, block_ids=True)
    s = InstanceScheduler(kv, max_seqs=3, token_budget=6)
    reqs = [Request(i, list(range(1, n + 1)), m, frozenset({99})) for i, (n, m) in enumerate([(9, 3), (2, 5), (13, 1)])]
    for r in reqs:
        s.add(r)
    ranges = drive(s)
    for r in reqs:
        spans = ranges[r.id]
        assert spans[0][0] == 0 and spans[-1][1] == r.prompt_len
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))  # contiguous chunks
        assert r.finished and r.finish_reason is FinishReason.LENGTH and len(r.output) == r.max_tokens
    assert len(ranges[2]) > 1 and kv.num_used == 0


def test_eos_and_stop_end_requests_before_max_tokens():
    kv = KVBlockManager(64, 4, block_ids=True)
    s = InstanceScheduler(kv, max_seqs=4, token_budget=32)
    a, b = Request(0, [1, 2, 3], 10, frozenset({42})), Request(1, [4, 5], 10)
    s.add(a)
    s.add(b)
    drive(s, pick=lambda req, step: 42 if step == 3 else 7)
    assert a.output == [7, 7, 7, 42] and a.finish_reason is FinishReason.STOP
    assert len(b.output) == 10 and b.finish_reason is FinishReason.LENGTH
    c = Request(2, [1, 2], 10)
    s.add(c)
    batch = s.schedule()
    s.complete(batch, [], [7])
    s.finish(2)  # a stop string, seen by the runtime
    assert c.finish_reason is FinishReason.STOP and kv.num_used == 0 and not s.has_unfinished()


def test_admission_is_atomic_and_fcfs():
    kv = KVBlockManager(8, 4, block_ids=True)  # 32 tokens
    s = InstanceScheduler(kv, max_seqs=4, token_budget=64)
    big, small = Request(0, [1] * 10, 10), Request(1, [2] * 14, 10)  # 5 and 6 blocks
    s.add(big)
    s.add(small)
    s.schedule()
    assert big.status is Status.PREFILLING and small.status is Status.WAITING
    assert kv.held(1) == 0 and kv.num_used == 5  # the one that does not fit holds nothing
    s.abort(0)
    assert kv.num_used == 0 and big.finish_reason is FinishReason.ABORT
    s.schedule()
    assert small.status is Status.PREFILLING and kv.held(1) == 6
    with pytest.raises(CloudMatrixError, match="KV blocks"):
        s.add(Request(2, [1] * 30, 10))


def test_a_prefix_hit_shares_blocks_and_skips_their_prefill():
    kv = KVBlockManager(32, 4, block_ids=True)
    s = InstanceScheduler(kv, max_seqs=4, token_budget=64, prefix_cache=PrefixCache(32, 4))
    first = Request(0, list(range(10, 23)), 2)  # 13 tokens: 3 full blocks offered to the cache
    s.add(first)
    drive(s)
    assert kv.num_used == 3  # kept alive by the cache alone
    second = Request(1, list(range(10, 20)) + [1, 2, 3, 4], 2)  # shares 2 full blocks (and 2 tokens more)
    s.add(second)
    ranges = drive(s)
    assert second.cached_tokens == 8 and ranges[1] == [(8, 14)]
    assert s.cached_tokens == 8 and s.cache.lookups == 2 and s.cache.hit_blocks == 2
