"""A request's lifecycle in the control plane: waiting -> prefilling -> decoding -> finished.

It ends at an EOS token, at `max_tokens` output tokens, when the runtime reports a stop string
(text is the runtime's business: serving/ never sees a tokenizer), or when it is aborted. No
timestamps: clocks live in the runtimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, StrEnum

from cloudmatrix.errors import CloudMatrixError


class Status(Enum):
    WAITING = "waiting"  # no KV blocks yet
    PREFILLING = "prefilling"  # blocks held, prompt being computed chunk by chunk
    DECODING = "decoding"  # prompt done, one (or 1 + drafts) token(s) per step
    FINISHED = "finished"


class FinishReason(StrEnum):
    STOP = "stop"  # EOS token or stop string
    LENGTH = "length"  # max_tokens reached
    ABORT = "abort"


@dataclass(eq=False)
class Request:
    id: int  # non-negative, unique among live requests (KV accounting is indexed by it)
    prompt: list[int]
    max_tokens: int
    eos_token_ids: frozenset[int] = frozenset()
    output: list[int] = field(default_factory=list)
    status: Status = Status.WAITING
    finish_reason: FinishReason | None = None
    computed: int = 0  # prompt tokens whose KV exists (cached ones included)
    cached_tokens: int = 0  # prompt tokens served from the prefix cache
    block_hashes: list[int] = field(default_factory=list)  # chained hashes of the prompt's full blocks
    draft: list[int] = field(default_factory=list)  # speculative tokens to verify next step (MTP)

    def __post_init__(self) -> None:
        if not self.prompt:
            raise CloudMatrixError("a request needs at least one prompt token; send a non-empty prompt")
        if self.max_tokens < 1:
            raise CloudMatrixError(f"max_tokens must be >= 1, got {self.max_tokens}; ask for at least one token")

    @property
    def prompt_len(self) -> int:
        return len(self.prompt)

    @property
    def finished(self) -> bool:
        return self.status is Status.FINISHED

    @property
    def kv_tokens(self) -> int:
        """Tokens whose KV is cached: the prompt part computed, and every output token but the last
        (the last one is the input of the next decode step)."""
        return self.computed + max(len(self.output) - 1, 0)

    def append(self, tokens: list[int]) -> list[int]:
        """Add generated tokens in order until EOS or max_tokens; returns those kept (the rest of a
        speculative run after the end is dropped) and finishes the request when it ends."""
        kept: list[int] = []
        for t in tokens:
            if self.finished:
                break
            self.output.append(t)
            kept.append(t)
            if t in self.eos_token_ids:
                self.finish(FinishReason.STOP)
            elif len(self.output) >= self.max_tokens:
                self.finish(FinishReason.LENGTH)
        return kept

    def finish(self, reason: FinishReason) -> None:
        if not self.finished:
            self.status = Status.FINISHED
            self.finish_reason = reason
            self.draft = []
