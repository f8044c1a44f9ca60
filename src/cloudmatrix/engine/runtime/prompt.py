"""The checks every engine makes on a new request's prompt, in one place (the in-process engine and
the disaggregated one accept exactly the same requests)."""

from __future__ import annotations

from cloudmatrix.engine.runtime.params import SamplingParams
from cloudmatrix.errors import CloudMatrixError


def prompt_token_ids(
    request_id: str,
    prompt: str | list[int],
    params: SamplingParams,
    *,
    tokenizer,
    vocab_size: int,
    max_model_len: int,
) -> list[int]:
    """Validate `params` and the prompt; return the prompt as token ids, or raise a one-line error."""
    params.validate()
    if isinstance(prompt, str):
        if tokenizer is None:
            raise CloudMatrixError("this model folder has no tokenizer.json; pass the prompt as token ids")
        ids = tokenizer.encode(prompt).ids
    else:
        ids = [int(t) for t in prompt]
    if not ids:
        raise CloudMatrixError(f"request {request_id!r}: the prompt is empty; send at least one token")
    if min(ids) < 0 or max(ids) >= vocab_size:
        raise CloudMatrixError(f"request {request_id!r}: token ids must be in [0, {vocab_size}) for this model")
    if len(ids) + params.max_tokens > max_model_len:
        raise CloudMatrixError(
            f"request {request_id!r}: {len(ids)} prompt + {params.max_tokens} max_tokens exceeds the model's "
            f"{max_model_len} tokens; shorten the prompt or lower max_tokens"
        )
    if params.stop and tokenizer is None:
        raise CloudMatrixError("stop strings need a tokenizer; this model folder has none")
    return ids
