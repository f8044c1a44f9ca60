"""`cloudmatrix serve`: the engine behind an OpenAI-compatible HTTP API (FastAPI + uvicorn).

With no arguments: the packaged default model on CPU at http://127.0.0.1:8000, deployed the
CloudMatrix-Infer way as separate processes (`cloudmatrix.engine.disagg`): one prefill worker, one
decode worker group of `--ep` (2) expert-parallel ranks in lockstep, and the caching pool of latent
KV blocks in shared host memory (`--ray` runs the workers as Ray actors, the EP group gang-scheduled in
one placement group). `--single-process` serves the in-process `LLMEngine` instead
(continuous batching with MTP speculative decoding, no worker processes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cloudmatrix.errors import CloudMatrixError

DEFAULT_NAME = "cloudmatrix-default"


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def start_local_ray(workers: int) -> None:
    """A local Ray cluster with a CPU slot per worker even on a small machine: each worker is one
    single-threaded process, exactly as without Ray (where 4 workers share 2 cores just the same)."""
    import os

    try:
        import ray
    except ImportError:
        raise CloudMatrixError("--ray needs the scale extra: pip install 'cloudmatrix[scale]'") from None
    if not ray.is_initialized():
        cpus = max(os.cpu_count() or 1, workers)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)


def build_engine(
    model: Path | None,
    single_process: bool,
    prefill: int,
    decode: int,
    ep: int,
    ray: str | None,
    max_num_seqs: int | None,
    kv_cache_tokens: int,
    threads: int,
):
    """The engine the flags ask for (anything the deployment cannot do yet is refused, not ignored)."""
    import torch

    from cloudmatrix.engine.runtime.engine import DEFAULT_MODEL_DIR, LLMEngine
    from cloudmatrix.engine.runtime.params import EngineConfig

    torch.set_num_threads(threads)
    if single_process:
        if ray is not None:
            raise CloudMatrixError("--ray places worker processes; drop it with --single-process")
        if (prefill, decode, ep) != (1, 1, 2):
            raise CloudMatrixError("--prefill/--decode/--ep describe worker processes; drop them with --single-process")
        seqs = {} if max_num_seqs is None else {"max_num_seqs": max_num_seqs}
        return LLMEngine(model, config=EngineConfig(kv_cache_tokens=kv_cache_tokens, **seqs))
    if max_num_seqs is not None or threads != 1:
        raise CloudMatrixError(
            "--max-num-seqs and --threads apply to --single-process; the worker processes run one thread each"
        )
    if prefill != 1:
        raise CloudMatrixError(
            f"--prefill {prefill}: the disaggregated runtime runs one prefill worker for now; use --prefill 1"
        )
    if decode < 1 or ep < 1:
        raise CloudMatrixError(f"--decode and --ep must be at least 1, got --decode {decode} --ep {ep}")
    from cloudmatrix.engine.disagg import DisaggConfig, DisaggregatedEngine

    if ray == "local":
        start_local_ray(1 + decode * ep)

    blocks = -(-kv_cache_tokens // DisaggConfig.block_size)
    config = DisaggConfig(
        decode_ep=ep, decode_groups=decode, decode_cache_blocks=blocks, pool_blocks=blocks, ray=ray or None
    )
    return DisaggregatedEngine(model or DEFAULT_MODEL_DIR, config=config)


def serve(
    model: Annotated[Path | None, typer.Option(help="HF model folder (default: the packaged default model)")] = None,
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind")] = 8000,
    prefill: Annotated[int, typer.Option(help="Prefill worker processes")] = 1,
    decode: Annotated[int, typer.Option(help="Decode worker groups")] = 1,
    ep: Annotated[int, typer.Option(help="Expert-parallel ranks per decode group")] = 2,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Run the workers as Ray actors (EP group gang-scheduled): 'local' starts a local cluster, "
            "or a cluster ADDRESS"
        ),  # fmt: skip
    ] = None,
    single_process: Annotated[
        bool, typer.Option("--single-process", help="One in-process engine (MTP, continuous batching), no workers")
    ] = False,
    served_model_name: Annotated[str | None, typer.Option(help="Model id clients send (default: folder name)")] = None,
    max_pending: Annotated[int, typer.Option(help="Requests accepted at once (running + waiting); more get 429")] = 64,
    request_timeout: Annotated[float, typer.Option(help="Seconds before a request is aborted (504)")] = 300.0,
    max_num_seqs: Annotated[
        int | None, typer.Option(help="Sequences the engine runs at once (--single-process; default 64)")
    ] = None,
    kv_cache_tokens: Annotated[int, typer.Option(help="KV cache size in tokens")] = 32768,
    threads: Annotated[int, typer.Option(help="torch threads of the engine (--single-process)")] = 1,
) -> None:
    """Serve a model over an OpenAI-compatible HTTP API: /v1/completions, /v1/chat/completions, /metrics."""
    if not 0 < port < 65536:
        raise CloudMatrixError(f"--port {port} is not a TCP port (1-65535)")
    for flag, v in (("--max-pending", max_pending), ("--threads", threads), ("--max-num-seqs", max_num_seqs or 1)):
        if v < 1:
            raise CloudMatrixError(f"{flag} must be at least 1, got {v}")
    if not request_timeout > 0:
        raise CloudMatrixError(f"--request-timeout must be > 0 seconds, got {request_timeout}")
    if model is not None and not (model / "config.json").exists():
        raise CloudMatrixError(f"{model} has no config.json; pass an HF model folder to --model")
    from cloudmatrix.api.app import ServerConfig, create_app
    from cloudmatrix.api.server import run_foreground
    from cloudmatrix.engine.runtime.engine import DEFAULT_MODEL_DIR

    engine = build_engine(model, single_process, prefill, decode, ep, ray, max_num_seqs, kv_cache_tokens, threads)
    name = served_model_name or (DEFAULT_NAME if model is None else model.resolve().name)
    where = (
        "one in-process engine" if single_process else f"1 prefill worker, {decode} decode group(s) of {ep} EP ranks"
    )
    where += f", as Ray actors ({ray})" if ray else ""
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
        close = getattr(engine, "close", None)
        if callable(close):
            close()
        if ray == "local":
            import ray as ray_module

            ray_module.shutdown()
