"""Spawned gloo ranks in tests, retried once if a worker dies by a signal.

On the shared 2-core CI machine a gloo worker has been seen to abort in setup ("terminate called
without an active exception", SIGABRT) in one run out of many, with the same code passing before and
after. A worker killed by a signal is retried once, with a warning so the flake stays visible; a
worker that raises, or a second death, fails the test as before."""

from __future__ import annotations

import warnings
from typing import Any

from torch.multiprocessing.spawn import ProcessExitedException

from cloudmatrix.engine.parallel import run_ranks


def run_ranks_once_more_on_signal(fn: Any, world: int, *args: Any, **kw: Any) -> list[Any]:
    try:
        return run_ranks(fn, world, *args, **kw)
    except ProcessExitedException as e:
        if e.signal_name is None:  # exited with a code, not killed: a real failure
            raise
        warnings.warn(f"a spawned rank died by {e.signal_name}; retrying the {world}-rank run once", stacklevel=2)
        return run_ranks(fn, world, *args, **kw)
