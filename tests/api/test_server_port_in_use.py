"""A port that cannot be bound is the user's one-line error, not a hang or a uvicorn traceback."""

from __future__ import annotations

import socket

import pytest

from cloudmatrix.errors import CloudMatrixError

pytest.importorskip("uvicorn")


async def tiny_app(scope, receive, send):  # a valid ASGI app; never reached
    raise AssertionError("the server must not start")


def test_port_in_use_is_a_one_line_error():
    from cloudmatrix.api.server import run_foreground

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CloudMatrixError) as e:
            run_foreground(tiny_app, "127.0.0.1", port, log_level="critical")
    msg = str(e.value)
    assert f"127.0.0.1:{port}" in msg and "--port" in msg and "\n" not in msg
