"""Run the HTTP app with uvicorn: in the foreground (`cloudmatrix serve`) or in a background thread on a
loopback ephemeral port that stops on exit (tests, the load benchmark)."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from cloudmatrix.errors import CloudMatrixError


def run_foreground(app: Any, host: str, port: int, log_level: str = "info") -> None:
    """Serve until Ctrl-C or SIGTERM, then shut down cleanly. uvicorn runs in a thread and this thread
    owns the signals: in the main thread uvicorn re-raises SIGINT after its shutdown, which asyncio
    turns into a KeyboardInterrupt traceback from the cancelled lifespan task."""
    import signal

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5))
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=_run_until_exit, args=(server,), name="uvicorn", daemon=True)
    thread.start()
    try:
        while thread.is_alive() and not stop.wait(0.2):
            pass
    finally:
        server.should_exit = True
        thread.join(15)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not stop.is_set() and not server.started:
        raise CloudMatrixError(f"could not serve on {host}:{port} (see the log above); is the port in use? pass --port")


def _run_until_exit(server: Any) -> None:
    """uvicorn calls sys.exit(1) when it cannot bind; in this thread that only means "did not start",
    which run_foreground reports as the user's one-line error."""
    with contextlib.suppress(SystemExit):
        server.run()


class BackgroundServer:
    """`with BackgroundServer(app) as url:` serves on http://127.0.0.1:<free port> until the block ends."""

    def __init__(self, app: Any, host: str = "127.0.0.1", start_timeout_s: float = 60.0):
        import uvicorn

        self._config = uvicorn.Config(app, host=host, port=0, log_level="warning", lifespan="on",
                                      timeout_graceful_shutdown=2)  # fmt: skip
        self._server = uvicorn.Server(self._config)
        self._thread = threading.Thread(target=self._server.run, name="uvicorn", daemon=True)
        self._start_timeout_s = start_timeout_s
        self.url = ""

    def __enter__(self) -> str:
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._server.should_exit = True
                raise CloudMatrixError("the HTTP server did not start; see its log above")
            time.sleep(0.01)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self.url

    def __exit__(self, *exc: Any) -> None:
        self._server.should_exit = True
        self._thread.join(10)
