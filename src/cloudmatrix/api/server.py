"""Run the HTTP app with uvicorn: in the foreground (`cloudmatrix serve`) or in a background thread on a
loopback ephemeral port that stops on exit (tests, the load benchmark)."""

from __future__ import annotations

import threading
import time
from typing import Any

from cloudmatrix.errors import CloudMatrixError


def run_foreground(app: Any, host: str, port: int, log_level: str = "info") -> None:
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


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
