import numpy as np
import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.serving.kv_blocks import KVBlockManager


def test_blocks_for_ceil_scalar_and_vector():
    kv = KVBlockManager(total_blocks=100, block_size=128)
    assert kv.blocks_for(0) == 0
    assert kv.blocks_for(1) == 1
    assert kv.blocks_for(128) == 1
    assert kv.blocks_for(129) == 2
    assert kv.blocks_for(np.array([0, 1, 256, 257])).tolist() == [0, 1, 2, 3]


def test_allocate_grow_free_and_refuse():
    kv = KVBlockManager(total_blocks=4, block_size=10)
    assert kv.allocate(0, 25)  # 3 blocks
    assert kv.num_used == 3 and kv.num_free == 1 and kv.occupancy == pytest.approx(0.75)
    assert kv.allocate(0, 30)  # still 3 blocks
    assert kv.num_used == 3
    assert not kv.allocate(1, 11)  # needs 2, only 1 free: refused, nothing changes
    assert kv.num_used == 3 and kv.held(1) == 0
    assert kv.allocate(1, 10)
    assert kv.num_free == 0
    assert not kv.allocate(0, 31)
    assert kv.free(0) == 3
    assert kv.num_free == 3 and kv.held(0) == 0
    assert kv.free(0) == 0


def test_allocate_many_is_all_or_nothing():
    kv = KVBlockManager(total_blocks=10, block_size=4, expected_requests=2)
    ids = np.array([0, 5, 3000])  # grows the id table past expected_requests
    assert kv.allocate_many(ids, np.array([4, 8, 1]))
    assert kv.held(ids).tolist() == [1, 2, 1] and kv.num_used == 4
    assert kv.extra_blocks(ids, np.array([5, 8, 9])) == 1 + 0 + 2
    assert not kv.allocate_many(ids, np.array([40, 8, 9]))  # 9 more + 2 > 6 free
    assert kv.held(ids).tolist() == [1, 2, 1] and kv.num_used == 4
    assert kv.allocate_many(ids, np.array([5, 8, 9]))
    assert kv.num_used == 7
    assert kv.free_many(np.array([0, 0, 3000, 77777])) == 2 + 3
    assert kv.num_used == 2


def test_never_overcommits_under_random_load():
    rng = np.random.default_rng(0)
    kv = KVBlockManager(total_blocks=50, block_size=16)
    lengths = np.zeros(40, dtype=np.int64)
    for _ in range(500):
        rid = int(rng.integers(0, 40))
        if rng.random() < 0.3:
            kv.free(rid)
            lengths[rid] = 0
        else:
            new = lengths[rid] + int(rng.integers(1, 40))
            if kv.allocate(rid, new):
                lengths[rid] = new
        assert 0 <= kv.num_used <= kv.total_blocks
        assert kv.num_used == int(kv.blocks_for(lengths).sum())


def test_bad_inputs_raise():
    with pytest.raises(CloudMatrixError):
        KVBlockManager(-1, 16)
    with pytest.raises(CloudMatrixError):
        KVBlockManager(10, 0)
    kv = KVBlockManager(10, 16)
    with pytest.raises(CloudMatrixError, match="shape"):
        kv.allocate_many(np.array([1, 2]), np.array([3]))
    with pytest.raises(CloudMatrixError):
        kv.allocate(-1, 5)
    with pytest.raises(CloudMatrixError):
        kv.blocks_for(-3)
