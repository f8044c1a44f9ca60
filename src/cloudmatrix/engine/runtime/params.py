"""What a caller gives the engine (SamplingParams, EngineConfig) and what it gets back (RequestOutput,
EngineStats). vLLM-shaped on purpose; the agreed interface is in the team's ENGINE_API notes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from cloudmatrix.errors import CloudMatrixError


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int | None = None  # per-request generator; same seed -> same tokens
    stop: tuple[str, ...] = ()  # stop strings (not included in the output text)
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.stop, (str, list)):  # a lone string or a list: one tuple
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def validate(self) -> None:
        """Raise CloudMatrixError with a one-line reason for a value the engine cannot honour."""
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise CloudMatrixError(f"max_tokens must be an integer >= 1, got {self.max_tokens!r}")
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise CloudMatrixError(f"temperature must be >= 0 (0 = greedy), got {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise CloudMatrixError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise CloudMatrixError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise CloudMatrixError(f"seed must be a non-negative integer or None, got {self.seed!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise CloudMatrixError(f"stop strings must be non-empty strings, got {self.stop!r}")


@dataclass
class RequestOutput:
    request_id: str
    new_token_ids: list[int]  # tokens produced by this step for this request (may be empty)
    new_text: str  # detokenised increment (stop strings already cut)
    finished: bool
    finish_reason: str | None  # "stop" (EOS or stop string) | "length" | "abort" | None
    prompt_tokens: int
    output_tokens: int  # total so far
    cached_tokens: int  # prompt tokens served from the prefix cache


@dataclass(frozen=True)
class EngineConfig:
    block_size: int = 16  # tokens per KV block
    kv_cache_tokens: int = 32768  # KV pool size in tokens (rounded up to whole blocks)
    max_num_seqs: int = 64  # sequences in flight (prefilling + decoding)
    max_num_batched_tokens: int = 512  # tokens per step: decode tokens first, prefill chunks fill the rest
    enable_prefix_caching: bool = True
    speculative: bool | None = None  # MTP drafts: None = when the checkpoint has MTP weights
    dtype: str = "float32"  # float32 | bfloat16
    max_model_len: int | None = None  # default: the model's max_position_embeddings
    seed: int = 0  # the generator of sampled requests that bring no seed
    device: str = "cpu"

    @property
    def num_blocks(self) -> int:
        return -(-self.kv_cache_tokens // self.block_size)

    def validate(self) -> None:
        for name in ("block_size", "kv_cache_tokens", "max_num_seqs", "max_num_batched_tokens"):
            if getattr(self, name) < 1:
                raise CloudMatrixError(f"EngineConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.dtype not in ("float32", "bfloat16"):
            raise CloudMatrixError(f"EngineConfig.dtype must be float32 or bfloat16, got {self.dtype!r}")


@dataclass(frozen=True)
class EngineStats:
    running: int  # requests holding KV (prefilling or decoding)
    waiting: int  # requests queued for KV blocks
    kv_blocks_used: int
    kv_blocks_total: int
    prefix_queries: int  # prompts looked up in the prefix cache
    prefix_hits: int  # prompt tokens served from the prefix cache (their prefill was skipped)
    tokens_in: int  # prompt tokens of finished-prefill requests, computed or cached
    tokens_out: int  # tokens generated
    prefill_tokens_computed: int  # prompt tokens that went through the model
    steps: int
    mtp_drafted: int
    mtp_accepted: int

    @property
    def mtp_acceptance(self) -> float:
        return self.mtp_accepted / self.mtp_drafted if self.mtp_drafted else 0.0
