import numpy as np
import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.serving.prefix_cache import PrefixCache, hash_token_blocks


def test_hash_token_blocks_full_blocks_only_and_chained():
    a = hash_token_blocks(list(range(10)), 4)
    assert len(a) == 2  # the partial third block has no hash
    b = hash_token_blocks(list(range(8)) + [99, 98], 4)
    assert a == b
    # Same second-block tokens behind a different first block: different hash (chained).
    c = hash_token_blocks([7, 7, 7, 7, 4, 5, 6, 7], 4)
    assert c[1] != a[1]
    assert all(0 <= h < 2**63 for h in a)
    assert hash_token_blocks(np.arange(10), 4) == a  # numpy input, stable values


def test_lookup_is_a_prefix_match_and_counts():
    cache = PrefixCache(capacity_blocks=10, block_size=16)
    assert cache.insert([1, 2, 3]) == 3
    assert cache.insert([1, 2, 3, 4]) == 1  # dedup
    assert cache.lookup([1, 2, 9, 4]) == 2  # stops at the first miss
    assert cache.hit_blocks == 2 and cache.miss_blocks == 2
    assert cache.hit_tokens == 32 and cache.miss_tokens == 32
    assert cache.lookup(np.array([5, 1]), record=False) == 0
    assert cache.lookups == 1  # the probe did not count


def test_lru_order_and_eviction():
    cache = PrefixCache(capacity_blocks=3, block_size=1)
    for h in (1, 2, 3):
        cache.insert([h])
    assert cache.lru_order() == [1, 2, 3]
    assert cache.lookup([1]) == 1
    assert cache.lru_order() == [2, 3, 1]
    cache.insert([4])
    assert 2 not in cache and {1, 3, 4} <= set(cache.lru_order())
    assert cache.evicted_blocks == 1


def test_chain_tail_is_evicted_before_head():
    cache = PrefixCache(capacity_blocks=4, block_size=1)
    cache.insert([10, 11, 12, 13])
    cache.insert([20])  # evicts one block: must be the tail 13, keeping 10-12 matchable
    assert cache.lookup([10, 11, 12, 13]) == 3


def test_chain_longer_than_capacity_keeps_head():
    cache = PrefixCache(capacity_blocks=2, block_size=1)
    cache.insert([1, 2, 3, 4])
    assert cache.lookup([1, 2, 3]) == 2
    assert len(cache) == 2


def _hit_rate(capacity: int, seed: int) -> tuple[float, float]:
    """Replay 2,000 requests over 20 shared prefixes of 8 blocks + 2 unique blocks."""
    rng = np.random.default_rng(seed)
    groups = rng.integers(0, 20, size=2000)
    cache = PrefixCache(capacity_blocks=capacity, block_size=1)
    seen: set[int] = set()
    reusable = 0
    for i, g in enumerate(groups):
        chain = [int(g) * 100 + j for j in range(8)] + [10_000 + 2 * i, 10_001 + 2 * i]
        if g in seen:
            reusable += 8
        seen.add(int(g))
        cache.lookup(chain)
        cache.insert(chain)
    return cache.hit_rate, reusable / (len(groups) * 10)


def test_hit_rate_matches_reuse_when_ample_and_falls_when_not():
    ample, reuse = _hit_rate(capacity=100_000, seed=1)
    assert ample == pytest.approx(reuse, abs=1e-12)
    small, _ = _hit_rate(capacity=40, seed=1)
    assert small < 0.5 * ample


def test_bad_sizes_raise():
    with pytest.raises(CloudMatrixError, match="capacity"):
        PrefixCache(-1, 16)
    with pytest.raises(CloudMatrixError, match="block_size"):
        PrefixCache(10, 0)
    with pytest.raises(CloudMatrixError, match="block_size"):
        hash_token_blocks([1, 2], 0)


def test_workload_prefix_reuse_through_the_cache():
    from cloudmatrix.sim.workload import WorkloadSpec

    spec = {
        "kind": "poisson", "rate": 10.0, "num_requests": 1500, "seed": 5,
        "input_len": {"kind": "uniform", "lo": 64, "hi": 512}, "output_len": 1,
        "prefix": {"groups": 8, "prefix_len": 1024, "popularity": "zipf", "mode": "prepend"},
    }  # fmt: skip
    w = WorkloadSpec.from_dict(spec).build()
    shared = w.shared_blocks(64)
    seen: set[int] = set()
    expected_hits = 0
    for g, s in zip(w.prefix_group.tolist(), shared.tolist(), strict=True):
        expected_hits += s if g in seen else 0
        seen.add(g)
    expected = expected_hits / w.prompt_blocks(64).sum()

    def replay(capacity: int) -> float:
        cache = PrefixCache(capacity, 64)
        for i in range(len(w)):
            h = w.block_hashes_for(i, 64)
            cache.lookup(h)
            cache.insert(h)
        return cache.hit_rate

    assert replay(10**6) == pytest.approx(expected, abs=1e-12)
    assert expected > 0.6
    # 60 blocks cannot hold 8 groups x 16 prefix blocks; 8 blocks not even one prefix.
    small, tiny = replay(60), replay(8)
    assert tiny < small < expected - 0.2
