"""The discrete-event loop: a heap of (time, order, handler, argument); each event calls its handler.

The handlers belong to the mode being simulated (`disaggregated.py`, `colocated.py`); the loop
knows nothing about serving. The insertion order breaks ties, so events at one instant run in
the order they were scheduled and a run is deterministic.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

Handler = Callable[[Any, float], None]


class EventLoop:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Handler, Any]] = []
        self._order = itertools.count()
        self._stopped = False

    def at(self, t: float, handler: Handler, arg: Any = None, _push=heapq.heappush) -> None:
        """Call `handler(arg, t)` at simulated time `t`."""
        _push(self._heap, (t, next(self._order), handler, arg))

    def __len__(self) -> int:
        return len(self._heap)

    def stop(self) -> None:
        """End the current `run` once the running handler returns."""
        self._stopped = True

    def run(self, horizon: float = float("inf"), progress: Callable[[float], None] | None = None) -> float:
        """Run events up to `horizon` [s]; returns the time the run stopped (the horizon, or the last event)."""
        heap, pop = self._heap, heapq.heappop
        self._stopped = False
        t = 0.0
        next_tick = 1.0
        while heap and not self._stopped:
            if heap[0][0] > horizon:
                return horizon
            t, _, handler, arg = pop(heap)
            if progress is not None and t >= next_tick:
                progress(t)
                next_tick = float(int(t) + 1)
            handler(arg, t)
        return t


def __getattr__(name: str) -> Any:
    # The scenario-level entry points moved to sim/simulation.py; callers that import them from here
    # (validate/paper.py, tests/validate) keep working. Resolved lazily, so there is no import cycle.
    if name in ("Simulation", "simulate", "run_scenario", "SimResult"):
        from cloudmatrix.sim import simulation

        return getattr(simulation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
