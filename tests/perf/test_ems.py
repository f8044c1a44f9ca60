"""The caching pool's read path and weight loading, against hand arithmetic from the sourced figures."""

import math

import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf.deployment import build_deployment
from cloudmatrix.perf.ems import OBJECT_STORAGE_BYTES_PER_S, kv_read_time, weight_load_time
from cloudmatrix.perf.memory import weight_bytes_per_die
from cloudmatrix.specs.hardware import load_system
from cloudmatrix.specs.model import load_model

R1 = load_model("deepseek-r1")
CM = load_system("cloudmatrix384")


def test_kv_read_pays_lookups_and_per_layer_copies_on_top_of_bandwidth():
    per_layer = 576 * 2  # MLA latent + rope, BF16
    t = kv_read_time(CM, "scale-up", 4096, 61, per_layer, 128)
    bw, lat = CM.spec.cpu_pool.read_bandwidth_per_die, CM.spec.scale_up.latency
    assert t == pytest.approx(32 * 2 * lat + 32 * 61 * lat + 4096 * 61 * per_layer / bw)
    # bigger blocks: fewer lookups and copies, the same bytes
    assert kv_read_time(CM, "scale-up", 4096, 61, per_layer, 512) < t
    assert kv_read_time(CM, "scale-up", 0, 61, per_layer, 128) == 0.0
    with pytest.raises(CloudMatrixError, match="block_tokens"):
        kv_read_time(CM, "scale-up", 10, 61, per_layer, 0)


def test_weight_loading_cold_takes_minutes_and_from_the_pool_seconds():
    dep = build_deployment(R1, dies=320)
    warm = weight_load_time(R1, CM, dep, "dram-pool")
    cold = weight_load_time(R1, CM, dep, "object-storage")
    assert warm == pytest.approx(weight_bytes_per_die(R1, dep) / CM.spec.cpu_pool.read_bandwidth_per_die)
    assert 0.01 < warm < 10  # "seconds" (paper)
    one_copy_int8 = R1.total_params(include_mtp=True)  # ~1 byte per parameter at INT8, BF16 head and embeddings
    assert cold - warm == pytest.approx(one_copy_int8 / OBJECT_STORAGE_BYTES_PER_S, rel=0.05)
    assert math.floor(cold / 60) >= 4  # "minutes" (paper: 671B INT8 at 2.5 GB/s)
    with pytest.raises(CloudMatrixError, match="weight source"):
        weight_load_time(R1, CM, dep, "ssd")
