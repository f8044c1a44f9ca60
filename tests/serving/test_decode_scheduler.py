"""Decode scheduler: slots per die, least-loaded DP admission, KV reservation, the busiest die."""

import numpy as np
import pytest

from cloudmatrix.serving.decode_scheduler import DecodeInstance
from cloudmatrix.serving.kv_blocks import KVBlockManager


def make(max_seqs=8, dies=4, blocks=1000, bs=16):
    return DecodeInstance(max_seqs, KVBlockManager(blocks, bs), dies=dies)


def test_admission_spreads_sequences_over_dies():
    d = make()
    for r in range(6):
        d.enqueue(r, 100, 10, 0.0)
    assert d.admit() == 6
    assert sorted(d.die_count.tolist()) == [1, 1, 2, 2]
    assert d.running == 6


def test_busiest_die_reports_the_heaviest_kv():
    d = make(max_seqs=4, dies=2)
    for r, ctx in enumerate((1000, 10, 10, 10)):
        d.enqueue(r, ctx, 5, 0.0)
    d.admit()
    most, ctx = d.busiest_die()
    assert most == 2
    # the die holding the 1,000-token sequence reads 1,010 tokens: that sets the pace
    assert ctx * most == 1010
    n, mean = d.batch()
    assert (n, mean) == (4, pytest.approx(1030 / 4))


def test_kv_reservation_blocks_admission_without_overtaking():
    d = make(max_seqs=8, dies=2, blocks=10, bs=16)  # 160 tokens of KV
    d.enqueue(0, 100, 20, 0.0)  # 120 tokens -> 8 blocks
    d.enqueue(1, 50, 10, 0.0)  # 60 tokens -> 4 blocks: does not fit next to request 0
    d.enqueue(2, 1, 1, 0.0)  # would fit, but must not overtake request 1
    assert d.admit() == 1
    assert d.queued == 2


def test_finished_sequences_free_their_slot_and_die():
    d = make(max_seqs=4, dies=2)
    for r in range(4):
        d.enqueue(r, 10, 1 + r, 0.0)
    d.admit()
    total, finished, gaps = d.complete_step(np.ones(4, dtype=np.int64), 0.5)
    assert total == 4
    assert finished.tolist() == [0]
    assert gaps.tolist() == [0.5]
    assert d.running == 3 and d.die_count.sum() == 3
    d.enqueue(9, 10, 3, 0.5)
    assert d.admit() == 1
    assert sorted(d.die_count.tolist()) == [2, 2]


def test_tokens_past_the_output_length_are_discarded():
    d = make(max_seqs=2, dies=1)
    d.enqueue(0, 10, 1, 0.0)
    d.admit()
    total, finished, _ = d.complete_step(np.full(2, 2, dtype=np.int64), 1.0)
    assert total == 1 and finished.tolist() == [0]


def test_slots_need_not_divide_over_the_dies():
    # a stack's max batch is per rank: 9 sequences over 8 ranks gives rank 0 a second slot
    d = make(max_seqs=9, dies=8)
    assert d.capacity.tolist() == [2] + [1] * 7
    for r in range(12):
        d.enqueue(r, 10, 5, 0.0)
    assert d.admit() == 9  # every slot, and no more
    assert d.die_count.tolist() == d.capacity.tolist()
    slots, _ = d.slots()
    assert sorted(slots.tolist()) == list(range(9))
    assert d.busiest_die()[0] == 2


def test_uneven_slots_never_overfill_a_die():
    rng = np.random.default_rng(3)
    d = make(max_seqs=11, dies=4, blocks=10_000)  # capacities 3, 3, 3, 2
    nxt = 0
    for _ in range(200):
        for _ in range(int(rng.integers(0, 5))):
            d.enqueue(nxt, 10, int(rng.integers(1, 6)), 0.0)
            nxt += 1
        d.admit()
        assert np.all(d.die_count <= d.capacity)
        assert d.running == min(d.max_seqs, d.running)
        # a die's live entries sit in its own slot range
        slots, _ = d.slots()
        starts = np.concatenate(([0], np.cumsum(d.capacity)))
        n = d.running
        assert np.all((starts[d.die_of[:n]] <= d.slot_of[:n]) & (d.slot_of[:n] < starts[d.die_of[:n] + 1]))
        d.complete_step(np.ones(d.max_seqs, dtype=np.int64), 0.0)


def test_fewer_slots_than_dies_is_refused():
    with pytest.raises(ValueError, match="at least dies"):
        make(max_seqs=3, dies=4)


def test_a_tp_rank_reports_its_sequences_per_die():
    d = DecodeInstance(8, KVBlockManager(1000, 16), dies=2, tp=4)  # two TP4 ranks of 4 slots each
    for r in range(3):
        d.enqueue(r, 100, 5, 0.0)
    d.admit()
    assert d.die_count.tolist() == [2, 1]
    assert d.busiest_die()[0] == 2 / 4


def test_round_robin_binds_each_request_to_its_rank_at_arrival():
    # 2 ranks x 2 slots; requests go to ranks 0, 1, 0, 1, ... in arrival order (SGLang's DP controller)
    d = DecodeInstance(4, KVBlockManager(1000, 16), dies=2, routing="round_robin")
    for r in range(4):
        d.enqueue(r, 10, 1 if r == 1 else 5, 0.0)  # request 1 (rank 1) finishes after one token
    assert d.admit() == 4
    assert d.die_of[: d.running].tolist() == [0, 1, 0, 1]
    _, finished, _ = d.complete_step(np.ones(4, dtype=np.int64), 1.0)
    assert finished.tolist() == [1]  # rank 1 now has a free slot, rank 0 none
    d.enqueue(10, 10, 5, 1.0)  # the 5th arrival is bound to rank 0: it waits although rank 1 has room
    assert d.admit() == 0 and d.queued == 1
    d.enqueue(11, 10, 5, 1.0)  # the 6th goes to rank 1 and overtakes it: the ranks' queues are independent
    assert d.admit() == 1 and d.queued == 1
    assert d.die_count.tolist() == [2, 2]
    # least-loaded routing would have given the 5th request rank 1's free slot at once
    ll = DecodeInstance(4, KVBlockManager(1000, 16), dies=2)
    for r in range(4):
        ll.enqueue(r, 10, 1 if r == 1 else 5, 0.0)
    ll.admit()
    ll.complete_step(np.ones(4, dtype=np.int64), 1.0)
    ll.enqueue(10, 10, 5, 1.0)
    assert ll.admit() == 1


def test_round_robin_keeps_fcfs_within_a_rank_and_the_shared_kv_stops_the_pass():
    d = DecodeInstance(4, KVBlockManager(10, 16), dies=2, routing="round_robin")  # 160 tokens of KV
    d.enqueue(0, 100, 20, 0.0)  # rank 0, 8 blocks
    d.enqueue(1, 50, 10, 0.0)  # rank 1, 4 blocks: does not fit beside request 0
    d.enqueue(2, 1, 1, 0.0)  # rank 0: must not overtake request 1 on the shared KV pool
    assert d.admit() == 1 and d.queued == 2
    assert d.finish([1, 2]).tolist() == [1, 2]  # waiting requests can still be ended
    assert d.queued == 0
    with pytest.raises(ValueError, match="routing"):
        DecodeInstance(4, KVBlockManager(10, 16), dies=2, routing="random")
