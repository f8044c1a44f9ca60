"""The caching pool (EMS) as the software sees it: reading cached KV blocks, and loading model weights.

Sources: Zuo et al., arXiv 2506.12708 (reference/cloudmatrix384.md): EMS holds KV blocks of 128-512
tokens in the CPU DRAM of the nodes, addressed by prefix hash; NPUs read them over UB (paper v2
Table 1: NPU->CPU read 147-151 GB/s and 1.0-1.7 us per 512 B message, inter- vs intra-node).
Model caching: a 671B INT8 model loads from object storage at 2.5 GB/s ("minutes"), from the
DRAM pool in seconds.

The KV read path, per request and die:
- lookup: one metadata round trip per block to the CPU-side index (block hash -> location);
- copy granularity: the decode/prefill KV cache is laid out per layer, so a block of B tokens is
  `layers` separate copies of B x (bytes per token and layer); each copy pays the plane's small-
  message latency (issued one after another by the die's copy queue: an assumption) plus its bytes
  at the plane's read bandwidth.
"""

from __future__ import annotations

import math

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf.comm import cache_read_bandwidth_per_die
from cloudmatrix.perf.deployment import Deployment
from cloudmatrix.perf.memory import weight_bytes_per_die
from cloudmatrix.specs.hardware import System
from cloudmatrix.specs.model import ModelSpec

# paper §4.4 (model caching): object storage read rate for a 671B INT8 model
OBJECT_STORAGE_BYTES_PER_S = 2.5e9


def _plane_latency(system: System, plane: str) -> float:
    return system.spec.scale_up.latency if plane == "scale-up" else system.spec.scale_out.latency


def kv_read_time(
    system: System,
    plane: str,
    tokens: float,
    layers: int,
    bytes_per_token_per_layer: float,
    block_tokens: int,
    dies: int = 1,
) -> float:
    """Seconds for `dies` dies to read `tokens` cached tokens of KV from the pool (split evenly over them):
    block lookups, one copy per block and layer, and the bytes at the plane's read bandwidth."""
    if tokens <= 0:
        return 0.0
    if block_tokens < 1 or dies < 1 or layers < 1:
        raise CloudMatrixError(
            f"a KV read needs block_tokens, dies and layers >= 1, got {block_tokens}, {dies}, {layers}"
        )
    bw = cache_read_bandwidth_per_die(system, plane)
    lat = _plane_latency(system, plane)
    blocks = math.ceil(tokens / block_tokens)
    blocks_per_die = math.ceil(blocks / dies)
    lookup = blocks_per_die * 2 * lat  # request and reply per block
    copies = blocks_per_die * layers * lat
    nbytes = tokens / dies * layers * bytes_per_token_per_layer
    return lookup + copies + nbytes / bw


def weight_load_time(model: ModelSpec, system: System, dep: Deployment, source: str, phase: str = "decode") -> float:
    """Seconds to bring one instance's weights into HBM.

    "dram-pool": the model is cached in the EMS DRAM pool; every die reads its own weights over the
    plane the pool sits on, all dies at once. A warm switch between two models cached in the pool is
    such a load of the new one (the old one's HBM is simply overwritten). "object-storage": a cold
    start; one copy of the model (at this deployment's precisions) streams into the pool at the object
    store's 2.5 GB/s (paper), then loads from the pool."""
    pool = weight_bytes_per_die(model, dep, phase) / cache_read_bandwidth_per_die(system, "scale-up")
    if source == "dram-pool":
        return pool
    if source == "object-storage":
        one_copy = weight_bytes_per_die(model, Deployment(dies=1, ep=1, precision=dep.precision), phase)
        return one_copy / OBJECT_STORAGE_BYTES_PER_S + pool
    raise CloudMatrixError(f"unknown weight source {source!r}; use 'object-storage' or 'dram-pool'")
