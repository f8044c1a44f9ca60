"""Drive a synchronous engine from an asyncio server: one background thread owns the engine.

The engine (`LLMEngine`, or any object with add_request / abort / step / has_unfinished / stats) is not
thread-safe, so only the loop thread touches it. HTTP handlers `submit()` a request and read its outputs
from an asyncio queue; `abort()` is queued the same way and takes effect before the next step. The loop
stamps every output with the time the step returned, so TTFT/ITL/E2E in /metrics are engine-side times.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cloudmatrix.api.metrics import ServerMetrics
from cloudmatrix.errors import CloudMatrixError


class QueueFull(Exception):
    """The bounded queue of accepted requests is full (the HTTP layer answers 429)."""


class EngineDead(Exception):
    """The engine loop stopped on an error; nothing new is accepted (the HTTP layer answers 503)."""


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    arrival: float
    first_token: float | None = None
    last_token: float | None = None
    output_tokens: int = 0
    itl: list[float] = field(default_factory=list)


class EngineLoop:
    def __init__(self, engine: Any, metrics: ServerMetrics, max_pending: int = 64, idle_wait_s: float = 0.05):
        if max_pending < 1:
            raise CloudMatrixError(f"max_pending={max_pending} must be at least 1")
        self.engine = engine
        self.metrics = metrics
        self.max_pending = max_pending
        self._idle_wait_s = idle_wait_s
        self._cmds: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()  # guards _streams between submitters and the loop
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self.steps = 0
        self.last_stats: Any = None
        self.last_health: dict | None = None  # the engine's own health() (workers up?), read on this thread
        self.recent_e2e_s: float | None = None  # moving average of finished requests' E2E (for Retry-After)

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    # -- called from the event loop -------------------------------------------------------------------------
    def pending(self) -> int:
        with self._lock:
            return len(self._streams)

    def submit(self, request_id: str, prompt: list[int], params: Any) -> asyncio.Queue:
        """Queue a request; its outputs (RequestOutput, or an exception) arrive on the returned queue."""
        if not self.alive:
            raise EngineDead(self.error or "the engine loop is not running")
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue(), time.perf_counter())
        with self._lock:
            if len(self._streams) >= self.max_pending:
                raise QueueFull(f"{len(self._streams)} requests in flight, the limit is {self.max_pending}")
            if request_id in self._streams:
                raise CloudMatrixError(f"request id {request_id!r} is already in flight")
            self._streams[request_id] = stream
        self._cmds.put(("add", request_id, prompt, params))
        self._wake.set()
        return stream.queue

    def abort(self, request_id: str) -> None:
        """Stop a request (client gone, timeout); its KV blocks are freed before the next step."""
        with self._lock:
            if self._streams.pop(request_id, None) is None:
                return
        self.metrics.aborted.inc()
        self._cmds.put(("abort", request_id))
        self._wake.set()

    # -- the loop thread ------------------------------------------------------------------------------------
    def _push(self, stream: _Stream, item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop closed during shutdown
            stream.loop.call_soon_threadsafe(stream.queue.put_nowait, item)

    def _drain_commands(self) -> None:
        while True:
            try:
                cmd = self._cmds.get_nowait()
            except queue.Empty:
                return
            if cmd[0] == "add":
                _, rid, prompt, params = cmd
                try:
                    self.engine.add_request(rid, prompt, params)
                except Exception as e:  # a CloudMatrixError is the user's (400); anything else is ours (500)
                    with self._lock:
                        stream = self._streams.pop(rid, None)
                    if stream is not None:
                        self._push(stream, e)
            else:
                self.engine.abort(cmd[1])

    def _deliver(self, outputs: list[Any], now: float) -> None:
        for out in outputs:
            with self._lock:
                stream = self._streams.get(out.request_id)
                if stream is not None and out.finished:
                    del self._streams[out.request_id]
            if stream is None:  # aborted by us; the engine's closing "abort" output needs no reader
                continue
            n = len(out.new_token_ids)
            if n:
                if stream.first_token is None:
                    stream.first_token = now
                    self.metrics.ttft.observe(now - stream.arrival)
                else:
                    gap = (now - stream.last_token) / n
                    for _ in range(n):
                        self.metrics.itl.observe(gap)
                stream.last_token = now
                stream.output_tokens += n
            if out.finished:
                self.metrics.on_finished(out, stream.arrival, stream.first_token, now)
                e2e = now - stream.arrival
                self.recent_e2e_s = e2e if self.recent_e2e_s is None else 0.8 * self.recent_e2e_s + 0.2 * e2e
            self._push(stream, out)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._drain_commands()
                if self.engine.has_unfinished():
                    outputs = self.engine.step()
                    self.steps += 1
                    self._deliver(outputs, time.perf_counter())
                else:
                    self._wake.wait(self._idle_wait_s)
                    self._wake.clear()
                self.last_stats = self.engine.stats()
                self.metrics.set_engine_stats(self.last_stats)
                health = getattr(self.engine, "health", None)
                if callable(health):
                    self.last_health = health()
        except Exception as e:  # the engine broke: fail every reader, report it on /health
            self.error = f"engine loop stopped: {type(e).__name__}: {e}"
            with self._lock:
                streams, self._streams = list(self._streams.values()), {}
            for s in streams:
                self._push(s, EngineDead(self.error))
