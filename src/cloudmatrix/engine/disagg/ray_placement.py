"""The disaggregated workers as Ray actors: one placement group for the deployment, files in shared memory.

`RayPlacement` reserves one {"CPU": 1} bundle per worker (prefill, then every decode group's ranks) in
one placement group, STRICT_PACK: placed together or not at all (an EP group is gang-scheduled), and on
one node, because the caching pool and the weights are shared host memory. Ray would copy tensors it
passes to an actor, so the pool is a file in /dev/shm every worker maps (`torch.from_file(shared=True)`)
and the weights a torch.save file there that workers load with mmap (page-cache shared, no copy: a
restarted actor starts warm). Queues are `ray.util.queue.Queue`; each worker is an actor running the
same function as a local process, and its `main` call's ObjectRef tells when it ended or died.
The decode groups' rendezvous binds the node address Ray reports, not 127.0.0.1.
"""

from __future__ import annotations

import os
import tempfile
import uuid

import torch

from cloudmatrix.errors import CloudMatrixError


class _Host:
    """A Ray actor that runs one worker function."""

    def main(self, target, args) -> None:
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
        target(*args)


class RayProcess:
    """The Process-like handle of a worker actor (exitcode, is_alive, join, kill)."""

    def __init__(self, ray, actor, ref):
        self._ray, self.actor, self.ref = ray, actor, ref
        self._killed = False

    @property
    def exitcode(self) -> int | None:
        done, _ = self._ray.wait([self.ref], timeout=0)
        return 0 if done else None

    def is_alive(self) -> bool:
        """The actor (not only its worker function) is up: an actor outlives its returned `main` call."""
        return not self._killed

    def join(self, timeout: float | None = None) -> None:
        self._ray.wait([self.ref], timeout=timeout)

    def kill(self) -> None:
        self._ray.kill(self.actor, no_restart=True)
        self._killed = True


class RayPlacement:
    def __init__(self, address: str, bundles: int, timeout_s: float):
        try:
            import ray
            from ray.util.placement_group import placement_group
        except ImportError:
            raise CloudMatrixError("Ray placement needs the scale extra: pip install 'cloudmatrix[scale]'") from None
        if not ray.is_initialized():
            ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
        self.ray = ray
        self.pg = placement_group([{"CPU": 1} for _ in range(bundles)], strategy="STRICT_PACK")
        ready, _ = ray.wait([self.pg.ready()], timeout=timeout_s)
        if not ready:
            self.close()
            raise CloudMatrixError(
                f"Ray could not place {bundles} workers of 1 CPU on one node in {timeout_s:.0f} s; the deployment "
                "shares host memory, so it needs one node with that many CPUs (or fewer decode ranks)"
            )
        self.host = ray.util.get_node_ip_address()
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.dir = tempfile.mkdtemp(prefix=f"cloudmatrix-{uuid.uuid4().hex[:8]}-", dir=base)

    def queue(self):
        from ray.util.queue import Queue

        return Queue()

    def share_pool(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, tuple]:
        path = os.path.join(self.dir, "pool.bin")
        n = 1
        for d in shape:
            n *= d
        return torch.from_file(path, shared=True, size=n, dtype=dtype).view(*shape), (path, shape, dtype)

    def share_weights(self, state: dict[str, torch.Tensor]) -> str:
        path = os.path.join(self.dir, "weights.pt")
        torch.save(state, path)
        return path

    def spawn(self, target, args, bundle: int) -> RayProcess:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        strategy = PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=bundle)
        actor = self.ray.remote(_Host).options(num_cpus=1, scheduling_strategy=strategy).remote()
        return RayProcess(self.ray, actor, actor.main.remote(target, args))

    def close(self) -> None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(self.pg)
        d = getattr(self, "dir", None)
        if d:
            for name in os.listdir(d):
                os.remove(os.path.join(d, name))
            os.rmdir(d)
