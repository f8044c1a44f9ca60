"""Start N local ranks of torch.distributed (gloo on CPU, NCCL on GPU) and collect what each returns.

The parent process owns the rendezvous store with a port the OS picks, so there is no race for a
"free port" between choosing it and binding it. It binds `host` (127.0.0.1 by default: local ranks;
ray_launch.py places ranks on several hosts and takes the address from Ray). Each worker pins torch
to one thread (more threads only slow matmuls on small machines, and N ranks already share the cores).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cloudmatrix.errors import CloudMatrixError

HOST = "127.0.0.1"


def _worker(
    rank: int,
    fn: Callable[..., Any],
    world_size: int,
    host: str,
    port: int,
    backend: str,
    out_dir: str,
    args: tuple,
    timeout_s: float,
) -> None:
    init_rank(rank, world_size, host, port, backend, timeout_s)
    try:
        result = fn(rank, world_size, *args)
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def init_rank(rank: int, world_size: int, host: str, port: int, backend: str, timeout_s: float) -> None:
    """Join the process group whose rendezvous store listens at host:port (one torch thread)."""
    torch.set_num_threads(1)
    if backend == "nccl":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    store = dist.TCPStore(host, port, world_size, is_master=False, timeout=timedelta(seconds=timeout_s))
    dist.init_process_group(
        backend, store=store, rank=rank, world_size=world_size, timeout=timedelta(seconds=timeout_s)
    )


def run_ranks(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    backend: str = "gloo",
    timeout_s: float = 120.0,
    host: str = HOST,
) -> list[Any]:
    """Run fn(rank, world_size, *args) in `world_size` spawned processes; return their results by rank.

    fn must be importable (defined at module level) and return something torch.save can write.
    """
    if world_size < 1:
        raise CloudMatrixError(f"world_size must be at least 1, got {world_size}")
    if backend == "nccl" and not torch.cuda.is_available():
        raise CloudMatrixError("backend 'nccl' needs CUDA GPUs; use backend='gloo' on CPU")
    store = dist.TCPStore(
        host, 0, world_size + 1, is_master=True, timeout=timedelta(seconds=timeout_s), wait_for_workers=False
    )
    with tempfile.TemporaryDirectory(prefix="cloudmatrix-ranks-") as out_dir:
        mp.spawn(
            _worker,
            args=(fn, world_size, host, store.port, backend, out_dir, args, timeout_s),
            nprocs=world_size,
            join=True,
        )
        paths = [os.path.join(out_dir, f"rank{r}.pt") for r in range(world_size)]
        results = [torch.load(p, weights_only=False) for p in paths]
    del store
    return results
