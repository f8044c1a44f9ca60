"""Communication costed from the topology: which fabric a group of dies sits on, and collectives over it.

The expert-parallel all-to-all (dispatch / combine) follows one formula on every fabric:

    t = latency + T * k * m * (1 - 1/EP) / (B_die * efficiency) + sync * log2(EP)

T tokens per rank, k destinations per token (top-k, plus one if shared experts sit on
their own dies), m bytes per token copy, (1 - 1/EP) the share that leaves the die,
B_die the die's one-way link rate, `efficiency` the fraction of it the kernel sustains,
and `sync` the completion-signalling cost per doubling of the group. `efficiency` and
`sync` are per fabric (hardware files), fitted by benchmarks/calibrate_comm.py to the
paper's EP8..EP256 table for CloudMatrix384 (UB) and H800 (DeepEP over RDMA), where it
reproduces all 16 published latencies within 5%.

Prefill's throughput kernels, where a plane has them measured (`prefill_latency` set: DeepEP's normal kernels,
TensorRT-LLM's NVLink all-to-all), send a token once to each destination die that holds any of its experts,
not once per expert (DeepEP `is_token_in_rank`; TensorRT-LLM's MNNVL all-to-all keys its send lists by rank),
and their fixed cost is their own:

    t = prefill_latency + T * R(EP, k) * (m / (B_die * efficiency) + per_copy),   R = (EP - 1) * (1 - (1 - 1/EP)^k)

R the expected remote dies among k uniformly routed experts, `per_copy` the kernels' own work per token
copy (DeepEP's normal kernels run on 20 SMs and are bound by them, not by the link, at prefill sizes).
Fitted by benchmarks/calibrate/run.py to aiconfigurator-core's tables of those kernels (docs/calibration.md).
"""

from __future__ import annotations

import math

from cloudmatrix.specs.hardware import FabricSpec, System

_FABRIC: dict[tuple[int, int], tuple[FabricSpec, System]] = {}


def fabric_for_group(system: System, group_dies: int) -> FabricSpec:
    """The plane a group of dies talks over: scale-up if it fits in one scale-up domain, else scale-out.

    A group that spans several NVLink islands (HGX clusters) is bound by the slower plane.
    """
    key = (id(system), group_dies)
    hit = _FABRIC.get(key)
    if hit is None or hit[1] is not system:
        chips = math.ceil(group_dies / system.chip.dies)
        fabric = system.spec.scale_up if chips <= system.scale_up_domain_chips else system.spec.scale_out
        if len(_FABRIC) > 4096:
            _FABRIC.clear()
        hit = _FABRIC[key] = (fabric, system)
    return hit[0]


def die_bandwidth(system: System, fabric: FabricSpec) -> float:
    return fabric.bandwidth_per_chip / system.chip.dies


def _sync(fabric: FabricSpec, group: int) -> float:
    return fabric.sync_per_log2_rank * math.log2(group) if group > 1 else 0.0


def ep_all_to_all(
    system: System,
    group: int,
    tokens: float,
    copies_per_token: float,
    bytes_per_copy: float,
    op: str,
    fabric: FabricSpec | None = None,
    hot_factor: float = 1.0,
    prefill: bool = False,
) -> tuple[float, float]:
    """(time, physical limit) of one EP dispatch ("dispatch") or combine ("combine") on one die.
    The plane is the one the group sits on unless `fabric` names it.

    Every rank waits for the slowest one: `hot_factor` (>= 1) is the busiest expert die's load over
    the mean, which is how much more that die receives in a dispatch and sends back in a combine
    than it would at perfect balance; the all-to-all completes when the hot die's traffic does.
    `prefill` selects the plane's throughput-kernel efficiencies (DeepEP normal) where it has them."""
    if group <= 1 or tokens <= 0:
        return 0.0, 0.0
    fabric = fabric or fabric_for_group(system, group)
    eff = _efficiency(fabric, op, prefill)
    bw = die_bandwidth(system, fabric)
    hot = max(1.0, hot_factor)
    if prefill and fabric.prefill_latency is not None:
        sent = tokens * expected_remote_dies(group, copies_per_token) * hot
        volume = sent * bytes_per_copy
        return fabric.prefill_latency + volume / (bw * eff) + sent * _per_copy(fabric, op), volume / bw
    volume = tokens * copies_per_token * bytes_per_copy * (1 - 1 / group) * hot
    return fabric.latency + volume / (bw * eff) + _sync(fabric, group), volume / bw


def hit_probability(bins: float, draws: float) -> float:
    """Chance that one given bin of `bins` is hit by `draws` independent uniform draws."""
    return 1.0 - (1.0 - 1.0 / bins) ** draws


def expected_remote_dies(group: int, copies: float) -> float:
    """Expected dies other than the sender's among `copies` uniformly routed experts spread evenly over `group`
    dies: what a kernel that sends each token once per destination die moves."""
    return (group - 1) * hit_probability(group, copies)


def _per_copy(fabric: FabricSpec, op: str) -> float:
    return fabric.prefill_dispatch_per_copy if op == "dispatch" else fabric.prefill_combine_per_copy


def _efficiency(fabric: FabricSpec, op: str, prefill: bool) -> float:
    """The fraction of the link an EP kernel sustains: prefill's throughput kernels where the plane gives
    their own figure, else the (decode, low-latency) kernels' fit."""
    if prefill:
        own = fabric.prefill_dispatch_efficiency if op == "dispatch" else fabric.prefill_combine_efficiency
        if own is not None:
            return own
    return fabric.dispatch_efficiency if op == "dispatch" else fabric.combine_efficiency


def expected_distinct(bins: float, draws: float) -> float:
    """Expected distinct bins hit by `draws` independent uniform draws over `bins` bins."""
    return bins * hit_probability(bins, draws) if bins > 0 else 0.0


def hierarchical_ep_all_to_all(
    system: System,
    group: int,
    tokens: float,
    top_k: float,
    bytes_per_copy: float,
    op: str,
    hot_factor: float = 1.0,
) -> tuple[float, float]:
    """DeepEP's normal (prefill) kernels on a group spanning nodes: a token crosses the scale-out plane
    once per destination node (not once per expert), then is forwarded to its experts' dies over the
    scale-up plane (DeepEP README, "normal kernels": NVLink + RDMA forwarding; DeepSeek-V3 §3.4). The
    two stages pipeline, so the slower one sets the time. Destination nodes per token: the expected
    distinct nodes among top_k uniformly routed experts."""
    node_dies = system.scale_up_domain_chips * system.chip.dies
    nodes = group / node_dies
    if nodes <= 1:
        return ep_all_to_all(system, group, tokens, top_k, bytes_per_copy, op, hot_factor=hot_factor, prefill=True)
    hot = max(1.0, hot_factor)
    up, out = system.spec.scale_up, system.spec.scale_out
    # scale-out: one copy per destination node; (1 - 1/nodes) of them leave the node
    per_token_nodes = expected_distinct(nodes, top_k)
    vol_out = tokens * per_token_nodes * (1 - 1 / nodes) * bytes_per_copy * hot
    bw_out = die_bandwidth(system, out)
    eff_out = _efficiency(out, op, True)
    out_t = out.latency + vol_out / (bw_out * eff_out) + _sync(out, group)
    bw_up = die_bandwidth(system, up)
    eff_up = _efficiency(up, op, True)
    if up.prefill_latency is not None:
        # the node's throughput kernels forward each token once to every die holding one of its experts
        sent = tokens * expected_distinct(group, top_k) * (1 - 1 / node_dies) * hot
        vol_up = sent * bytes_per_copy
        in_t = up.prefill_latency + vol_up / (bw_up * eff_up) + sent * _per_copy(up, op)
    else:
        # every die forwards (or, in a combine, pre-reduces) top_k copies per token inside its node
        vol_up = tokens * top_k * (1 - 1 / node_dies) * bytes_per_copy * hot
        in_t = up.latency + vol_up / (bw_up * eff_up) + _sync(up, node_dies)
    out_lim, in_lim = vol_out / bw_out, vol_up / bw_up
    return max(out_t, in_t), max(out_lim, in_lim)


def transfer(fabric: FabricSpec, bandwidth: float, nbytes: float, efficiency: float = 1.0) -> float:
    """A point-to-point bulk transfer (KV cache prefill -> decode, cache-pool reads)."""
    return fabric.latency + nbytes / (bandwidth * efficiency)


def cache_read_bandwidth_per_die(system: System, plane: str) -> float:
    """Rate at which one die reads cached KV from the caching pool (CPU DRAM of the nodes).

    "scale-up": over the fabric that joins NPUs and CPUs (CloudMatrix384: NPU->CPU read over UB,
    paper Table 1); "vpc": over the node's VPC/front-end card, shared by its dies.
    """
    from cloudmatrix.errors import CloudMatrixError

    if plane == "scale-up":
        if system.spec.cpu_pool is None:
            raise CloudMatrixError(
                f"{system.name} has no [cpu_pool] in its hardware file, so no caching pool on the scale-up "
                "fabric; use plane = 'vpc' or add a [cpu_pool] section"
            )
        return system.spec.cpu_pool.read_bandwidth_per_die
    if plane == "vpc":
        if system.spec.vpc_bandwidth_per_node is None:
            raise CloudMatrixError(f"{system.name} gives no vpc_bandwidth_per_node; add it to use plane = 'vpc'")
        return system.spec.vpc_bandwidth_per_node / (system.spec.chips_per_node * system.chip.dies)
    raise CloudMatrixError(f"unknown caching plane {plane!r}; use 'scale-up' or 'vpc'")
