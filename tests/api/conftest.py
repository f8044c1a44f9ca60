"""Fixtures of the HTTP tests: a server on the engine double (fake_engine.py), stopped when the test ends."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("tokenizers")

from .fake_engine import FakeEngine, serve  # noqa: E402


@pytest.fixture
def fake_engine():
    return FakeEngine()


@pytest.fixture
def server(fake_engine):
    with serve(fake_engine) as url:
        yield url, fake_engine
