"""`cloudmatrix serve`: the engine behind an OpenAI-compatible HTTP API (FastAPI + uvicorn).

With no arguments: the packaged default model on CPU at http://127.0.0.1:8000. The multi-process
deployment (prefill workers, decode EP groups, caching pool; Ray placement) is used when the
engine's disaggregated runtime (`cloudmatrix.engine.disagg`) is present; otherwise the in-process
engine serves, and the command says so instead of ignoring the flags.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated

import typer

from cloudmatrix.errors import CloudMatrixError

DEFAULT_NAME = "cloudmatrix-default"


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def disaggregated_available() -> bool:
    return importlib.util.find_spec("cloudmatrix.engine.disagg") is not None


def build_engine(
    model: Path | None,
    prefill: int | None,
    decode: int | None,
    ep: int | None,
    ray: str | None,
    max_num_seqs: int,
    kv_cache_tokens: int,
    threads: int,
):
    """The engine the flags ask for: in-process LLMEngine, or the disaggregated deployment."""
    import torch

    from cloudmatrix.engine.runtime.params import EngineConfig

    torch.set_num_threads(threads)
    config = EngineConfig(max_num_seqs=max_num_seqs, kv_cache_tokens=kv_cache_tokens)
    multi = any(v is not None for v in (prefill, decode, ep, ray))
    if disaggregated_available():
        from cloudmatrix.engine.disagg import DisaggregatedEngine  # the engine-distributed runtime

        return DisaggregatedEngine(
            model, config=config, prefill=prefill or 1, decode=decode or 1, ep=ep or 2, ray=ray, threads=threads
        )
    if multi:
        raise CloudMatrixError(
            "--prefill/--decode/--ep/--ray need the disaggregated runtime (cloudmatrix.engine.disagg), "
            "which this build lacks; drop them to serve the in-process engine"
        )
    from cloudmatrix.engine.runtime.engine import LLMEngine

    return LLMEngine(model, config=config)


def serve(
    model: Annotated[Path | None, typer.Option(help="HF model folder (default: the packaged default model)")] = None,
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind")] = 8000,
    prefill: Annotated[int | None, typer.Option(help="Prefill worker processes (disaggregated; default 1)")] = None,
    decode: Annotated[int | None, typer.Option(help="Decode worker groups (disaggregated; default 1)")] = None,
    ep: Annotated[int | None, typer.Option(help="EP ranks per decode group (disaggregated; default 2)")] = None,
    ray: Annotated[str | None, typer.Option(help="Place workers as Ray actors; 'local' or a cluster ADDRESS")] = None,
    served_model_name: Annotated[str | None, typer.Option(help="Model id clients send (default: folder name)")] = None,
    max_pending: Annotated[int, typer.Option(help="Requests accepted at once (running + waiting); more get 429")] = 64,
    request_timeout: Annotated[float, typer.Option(help="Seconds before a request is aborted (504)")] = 300.0,
    max_num_seqs: Annotated[int, typer.Option(help="Sequences the engine runs at once")] = 32,
    kv_cache_tokens: Annotated[int, typer.Option(help="KV cache size in tokens")] = 32768,
    threads: Annotated[int, typer.Option(help="torch threads per engine process")] = 1,
) -> None:
    """Serve a model over an OpenAI-compatible HTTP API: /v1/completions, /v1/chat/completions, /metrics."""
    if not 0 < port < 65536:
        raise CloudMatrixError(f"--port {port} is not a TCP port (1-65535)")
    for flag, v in (("--max-pending", max_pending), ("--threads", threads), ("--max-num-seqs", max_num_seqs)):
        if v < 1:
            raise CloudMatrixError(f"{flag} must be at least 1, got {v}")
    if not request_timeout > 0:
        raise CloudMatrixError(f"--request-timeout must be > 0 seconds, got {request_timeout}")
    if model is not None and not (model / "config.json").exists():
        raise CloudMatrixError(f"{model} has no config.json; pass an HF model folder to --model")
    from cloudmatrix.api.app import ServerConfig, create_app
    from cloudmatrix.api.server import run_foreground
    from cloudmatrix.engine.runtime.engine import DEFAULT_MODEL_DIR

    engine = build_engine(model, prefill, decode, ep, ray, max_num_seqs, kv_cache_tokens, threads)
    name = served_model_name or (DEFAULT_NAME if model is None else model.resolve().name)
    where = "disaggregated workers" if disaggregated_available() else "one in-process engine"
    typer.echo(f"serving {name} ({where}) at http://{host}:{port}/v1  (max context {engine.max_model_len} tokens)")
    config = ServerConfig(
        model_name=name,
        model_dir=model or DEFAULT_MODEL_DIR,
        max_pending=max_pending,
        request_timeout_s=request_timeout,
    )
    try:
        run_foreground(create_app(engine, config), host, port)
    finally:
        close = getattr(engine, "shutdown", None)
        if callable(close):
            close()
