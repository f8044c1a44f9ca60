"""`cloudmatrix generate "text"`: one prompt through the serving engine, text streamed as it is made."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)


def generate(
    prompt: Annotated[str, typer.Argument(help="The prompt text")],
    model: Annotated[Path | None, typer.Option(help="HF model folder (default: the packaged tiny model)")] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens to generate")] = 64,
    temperature: Annotated[float, typer.Option(help="0 = greedy")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass (1 = off)")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Sample among the k most likely tokens (0 = off)")] = 0,
    seed: Annotated[int | None, typer.Option(help="Seed of this request's sampler (same seed, same text)")] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string (repeatable); not printed")] = None,
    ignore_eos: Annotated[bool, typer.Option(help="Keep generating past EOS")] = False,
    mtp: Annotated[bool | None, typer.Option(help="MTP speculative decoding (default: when the model has MTP)")] = (
        None
    ),
    threads: Annotated[int, typer.Option(help="torch CPU threads")] = 1,
    stats: Annotated[bool, typer.Option(help="Print token counts, MTP acceptance and speed to stderr")] = False,
) -> None:
    """Generate a continuation of PROMPT with the engine (one request, printed as it is decoded)."""
    import sys
    import time

    import torch

    from cloudmatrix.engine.runtime import EngineConfig, LLMEngine, SamplingParams

    torch.set_num_threads(threads)
    params = SamplingParams(
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed,
        stop=tuple(stop or ()), ignore_eos=ignore_eos,
    )  # fmt: skip
    params.validate()
    engine = LLMEngine(model, config=EngineConfig(speculative=mtp))
    engine.add_request("cli", prompt, params)
    start = time.perf_counter()
    reason = None
    while engine.has_unfinished():
        for out in engine.step():
            sys.stdout.write(out.new_text)
            sys.stdout.flush()
            if out.finished:
                reason = out.finish_reason
    sys.stdout.write("\n")
    if stats:
        s = engine.stats()
        dt = time.perf_counter() - start
        accept = f", MTP acceptance {s.mtp_acceptance:.0%}" if s.mtp_drafted else ""
        print(
            f"[{engine.model_name}] {s.tokens_in} prompt + {s.tokens_out} generated tokens in {dt:.2f} s "
            f"({s.tokens_out / dt:.1f} tok/s), finish: {reason}{accept}",
            file=sys.stderr,
        )
