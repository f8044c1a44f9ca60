"""Run an EP group's ranks as Ray actors, gang-scheduled in one placement group.

The group's `world_size` actors are placed together or not at all: one placement group with one
{"CPU": cpus_per_rank} (or {"GPU": 1}) bundle per rank, strategy PACK by default (STRICT_PACK keeps
the group on one node, SPREAD across nodes). Rank 0's actor hosts the torch.distributed rendezvous
store on *its node's address as Ray reports it* (`ray.util.get_node_ip_address()`), so ranks on other
hosts reach it; nothing assumes 127.0.0.1. Collectives are then plain torch.distributed (gloo on CPU,
NCCL on GPU), exactly as with the local launcher (launch.py); Ray only places and starts the ranks.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from cloudmatrix.errors import CloudMatrixError


class _Rank:
    """One rank of the group (a Ray actor)."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size
        self._store = None

    def host_store(self, timeout_s: float) -> tuple[str, int]:
        """Rank 0: open the rendezvous store on this node's address; return (address, port)."""
        import ray
        import torch.distributed as dist

        host = ray.util.get_node_ip_address()
        self._store = dist.TCPStore(
            host, 0, self.world_size, is_master=True, timeout=timedelta(seconds=timeout_s), wait_for_workers=False
        )
        return host, self._store.port

    def join(self, host: str, port: int, backend: str, timeout_s: float) -> str:
        from cloudmatrix.engine.parallel.launch import init_rank

        init_rank(self.rank, self.world_size, host, port, backend, timeout_s)
        return host

    def run(self, fn: Callable[..., Any], args: tuple) -> Any:
        import torch.distributed as dist

        try:
            return fn(self.rank, self.world_size, *args)
        finally:
            dist.destroy_process_group()


def run_ranks_ray(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    backend: str = "gloo",
    strategy: str = "PACK",
    cpus_per_rank: float = 1,
    timeout_s: float = 120.0,
) -> list[Any]:
    """Run fn(rank, world_size, *args) on `world_size` Ray actors of one placement group (ray.init() first)."""
    try:
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    except ImportError:
        raise CloudMatrixError("Ray placement needs the scale extra: pip install 'cloudmatrix[scale]'") from None
    if not ray.is_initialized():
        raise CloudMatrixError("call ray.init() (or ray.init(address=...)) before placing ranks with Ray")
    if world_size < 1:
        raise CloudMatrixError(f"world_size must be at least 1, got {world_size}")
    bundle = {"GPU": 1, "CPU": cpus_per_rank} if backend == "nccl" else {"CPU": cpus_per_rank}
    pg = placement_group([dict(bundle) for _ in range(world_size)], strategy=strategy)
    try:
        ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
        if not ready:
            raise CloudMatrixError(
                f"Ray could not place {world_size} ranks of {bundle} together ({strategy}) in {timeout_s:.0f} s; "
                "the cluster lacks the resources: add nodes or lower the EP degree"
            )
        actor = ray.remote(_Rank)
        ranks = [
            actor.options(
                num_cpus=cpus_per_rank,
                num_gpus=1 if backend == "nccl" else 0,
                scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=r),
            ).remote(r, world_size)
            for r in range(world_size)
        ]
        host, port = ray.get(ranks[0].host_store.remote(timeout_s), timeout=timeout_s)
        ray.get([a.join.remote(host, port, backend, timeout_s) for a in ranks], timeout=timeout_s)
        results = ray.get([a.run.remote(fn, args) for a in ranks], timeout=timeout_s)
        for a in ranks:
            ray.kill(a)
        return results
    finally:
        remove_placement_group(pg)
