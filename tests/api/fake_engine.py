"""An in-test engine double for the HTTP layer's own tests (validation, 4xx, queueing, abort, SSE framing),
and a server fixture: uvicorn on 127.0.0.1, an ephemeral port, stopped when the test ends.

The double follows the LLMEngine interface (add_request / abort / step / has_unfinished / stats, tokenizer,
max_model_len) with a rule the tests can predict: request r's k-th output token is (first prompt token + k) mod V.
Tests of the real engine on the default model live in test_real_engine.py.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

from cloudmatrix.api.app import ServerConfig, create_app
from cloudmatrix.api.server import BackgroundServer
from cloudmatrix.errors import CloudMatrixError

TEXT = ["the quick brown fox jumps over the lazy dog", "to be or not to be, that is the question"] * 20


def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)  # fmt: skip
    tok.train_from_iterator(TEXT, trainer=trainer)
    return tok


@dataclass(frozen=True)
class Params:
    max_tokens: int = 16
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    def validate(self) -> None:
        if self.top_k > 1000:
            raise CloudMatrixError(f"top_k must be <= 1000 here, got {self.top_k}")


@dataclass(frozen=True)
class Stats:
    running: int
    waiting: int
    kv_blocks_used: int
    kv_blocks_total: int
    prefix_queries: int = 0
    prefix_hits: int = 0
    tokens_in: int = 0
    tokens_out: int = 0


@dataclass
class Out:
    request_id: str
    new_token_ids: list[int]
    new_text: str
    finished: bool
    finish_reason: str | None
    prompt_tokens: int
    output_tokens: int
    cached_tokens: int = 0


@dataclass
class _Req:
    prompt: list[int]
    params: Params
    out: list[int] = field(default_factory=list)


class FakeEngine:
    BLOCK = 4

    def __init__(self, max_model_len: int = 64, fail_at_step: int | None = None, stall_from_step: int | None = None,
                 step_s: float = 0.0):  # fmt: skip
        self.tokenizer = tiny_tokenizer()
        self.max_model_len = max_model_len
        self.vocab = self.tokenizer.get_vocab_size()
        self.reqs: dict[str, _Req] = {}
        self.aborted: list[str] = []
        self._abort_outputs: list[Out] = []
        self.gate = threading.Event()  # clear it to hold every step (a stalled engine)
        self.gate.set()
        self.fail_at_step = fail_at_step
        self.stall_from_step = stall_from_step  # from this step on, every step waits for `gate`
        # seconds each step takes: a real engine's step is milliseconds; a double that steps as fast as Python
        # allows floods the server's event loop with outputs (one callback each), which can hide a hang-up
        self.step_s = step_s
        self.steps = 0
        self.tokens_in = self.tokens_out = 0
        self.health_status: str | None = None

    @staticmethod
    def expected_tokens(prompt: list[int], n: int, vocab: int) -> list[int]:
        return [(prompt[0] + k + 1) % vocab for k in range(n)]

    def add_request(self, rid: str, prompt: list[int], params: Params) -> None:
        if rid in self.reqs:
            raise CloudMatrixError(f"duplicate request id {rid}")
        if isinstance(prompt, str):
            prompt = self.tokenizer.encode(prompt).ids
        self.reqs[rid] = _Req(list(prompt), params)

    def abort(self, rid: str) -> None:
        r = self.reqs.pop(rid, None)
        if r is not None:
            self.aborted.append(rid)
            self._abort_outputs.append(Out(rid, [], "", True, "abort", len(r.prompt), len(r.out)))

    def has_unfinished(self) -> bool:
        return bool(self.reqs or self._abort_outputs)

    def step(self) -> list[Out]:
        self.gate.wait(30)
        if self.step_s:
            time.sleep(self.step_s)
        self.steps += 1
        if self.stall_from_step is not None and self.steps >= self.stall_from_step:
            self.gate.clear()
        if self.fail_at_step is not None and self.steps >= self.fail_at_step:
            raise RuntimeError("simulated engine fault")
        outs, self._abort_outputs = self._abort_outputs, []
        for rid, r in list(self.reqs.items()):
            if not r.out:
                self.tokens_in += len(r.prompt)
            t = self.expected_tokens(r.prompt, len(r.out) + 1, self.vocab)[-1]
            r.out.append(t)
            self.tokens_out += 1
            done = len(r.out) >= r.params.max_tokens
            outs.append(Out(rid, [t], self.tokenizer.decode([t]), done, "length" if done else None,
                            len(r.prompt), len(r.out)))  # fmt: skip
            if done:
                del self.reqs[rid]
        return outs

    def kv_blocks_used(self) -> int:
        return sum(-(-(len(r.prompt) + len(r.out)) // self.BLOCK) for r in self.reqs.values())

    def stats(self) -> Stats:
        return Stats(len(self.reqs), 0, self.kv_blocks_used(), 64, tokens_in=self.tokens_in, tokens_out=self.tokens_out)

    def health(self) -> dict:
        return {"status": self.health_status} if self.health_status else {"status": "ok"}


MODEL = "fake-model"


@contextmanager
def serve(engine, **config):
    """The app on the double, served on 127.0.0.1 at an ephemeral port for the with-block."""
    app = create_app(engine, ServerConfig(model_name=MODEL, **config), params_factory=Params)
    with BackgroundServer(app) as url:
        yield url
