"""LLMEngine: the single-process serving engine (vLLM-shaped, synchronous).

    engine = LLMEngine("path/to/model")            # or None: the packaged default model
    engine.add_request("r1", "To be, or not", SamplingParams(max_tokens=32, stop=("\\n",)))
    while engine.has_unfinished():
        for out in engine.step():                  # one scheduler iteration
            print(out.request_id, out.new_text, out.finished)

Each step the control plane (`serving.instance_scheduler.InstanceScheduler`, the objects the
simulator drives) decides what runs: decode slots plus prefill chunks within a token budget; the
worker (`model_runner.ModelRunner`) runs them in one forward pass over the paged latent cache and
samples; the scheduler applies the tokens (EOS, max_tokens); the engine detokenises and cuts stop
strings. Thread-safe: one lock serialises add_request / abort / step (the HTTP layer steps from a
thread and aborts from another).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from cloudmatrix.engine.model.model import DeepseekV3
from cloudmatrix.engine.runtime.model_runner import ModelRunner
from cloudmatrix.engine.runtime.params import EngineConfig, EngineStats, RequestOutput, SamplingParams
from cloudmatrix.engine.runtime.prompt import prompt_token_ids
from cloudmatrix.engine.runtime.sampling import RowSampler
from cloudmatrix.engine.runtime.tokenizer import IncrementalDetokenizer, eos_token_ids, load_tokenizer
from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.serving.instance_scheduler import InstanceScheduler
from cloudmatrix.serving.kv_blocks import KVBlockManager
from cloudmatrix.serving.prefix_cache import PrefixCache
from cloudmatrix.serving.request import FinishReason, Request

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "default_model"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class Completion:
    """A finished request, as `LLMEngine.generate` returns it."""

    request_id: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str | None
    cached_tokens: int


@dataclass
class _Live:
    request_id: str
    req: Request
    sampler: RowSampler
    detok: IncrementalDetokenizer | None


class LLMEngine:
    def __init__(self, model_dir: str | Path | None = None, *, config: EngineConfig | None = None):
        from cloudmatrix.engine.loader import load_model

        config = config or EngineConfig()
        config.validate()
        folder = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
        if not (folder / "config.json").exists():
            where = "the packaged default model" if model_dir is None else "the model folder"
            raise CloudMatrixError(f"{where} {folder} has no config.json; pass --model DIR with an HF model folder")
        mtp = True if config.speculative else (False if config.speculative is False else None)
        model = load_model(folder, dtype=_DTYPES[config.dtype], mtp=mtp).to(config.device)
        tokenizer = load_tokenizer(folder)
        self._setup(model, tokenizer, eos_token_ids(folder, tokenizer), config, folder.name)

    @classmethod
    def from_model(
        cls,
        model: DeepseekV3,
        tokenizer=None,
        *,
        eos_token_ids: frozenset[int] | set[int] | tuple[int, ...] = (),
        config: EngineConfig | None = None,
        model_name: str = "model",
    ) -> LLMEngine:
        """An engine over an already-built model (tests, benchmarks); without a tokenizer, token ids only."""
        config = config or EngineConfig()
        config.validate()
        engine = cls.__new__(cls)
        engine._setup(model, tokenizer, frozenset(eos_token_ids), config, model_name)
        return engine

    def _setup(self, model: DeepseekV3, tokenizer, eos: frozenset[int], config: EngineConfig, name: str) -> None:
        self.config = config
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_name = name
        self.eos_token_ids = eos
        self.max_model_len = config.max_model_len or model.config.max_position_embeddings
        speculative = len(model.mtp) > 0 and config.speculative is not False
        if config.speculative and not len(model.mtp):
            raise CloudMatrixError("speculative decoding needs MTP weights; load a checkpoint that has them")
        kv = KVBlockManager(config.num_blocks, config.block_size, block_ids=True)
        self.cache = model.new_cache(config.num_blocks, config.block_size, blocks=kv)
        cache = PrefixCache(config.num_blocks, config.block_size) if config.enable_prefix_caching else None
        self.scheduler = InstanceScheduler(
            kv, max_seqs=config.max_num_seqs, token_budget=config.max_num_batched_tokens,
            prefix_cache=cache, draft_tokens=1 if speculative else 0,
        )  # fmt: skip
        self.runner = ModelRunner(model, self.cache, speculative)
        self._generator = torch.Generator(device=config.device).manual_seed(config.seed)
        self._lock = threading.RLock()
        self._live: dict[int, _Live] = {}
        self._by_name: dict[str, int] = {}
        self._free_ids: list[int] = []
        self._next_id = 0
        self._aborted: list[RequestOutput] = []
        self._steps = 0
        self._generate_calls = 0
        self._tokens_in = 0
        self._tokens_out = 0

    # ---- requests ------------------------------------------------------------------------
    def encode(self, prompt: str) -> list[int]:
        if self.tokenizer is None:
            raise CloudMatrixError("this engine has no tokenizer; pass the prompt as token ids")
        return self.tokenizer.encode(prompt).ids

    def add_request(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> None:
        ids = prompt_token_ids(
            request_id,
            prompt,
            params,
            tokenizer=self.tokenizer,
            vocab_size=self.model.config.vocab_size,
            max_model_len=self.max_model_len,
        )
        with self._lock:
            if request_id in self._by_name:
                raise CloudMatrixError(f"request id {request_id!r} is already running; use a unique id")
            rid = self._free_ids.pop() if self._free_ids else self._new_id()
            eos = frozenset() if params.ignore_eos else self.eos_token_ids
            req = Request(rid, ids, params.max_tokens, eos)
            try:
                self.scheduler.add(req)
            except CloudMatrixError:
                self._free_ids.append(rid)
                raise
            gen = None
            if not params.greedy:
                gen = self._generator
                if params.seed is not None:
                    gen = torch.Generator(device=self.config.device).manual_seed(params.seed)
            detok = IncrementalDetokenizer(self.tokenizer, params.stop, ids) if self.tokenizer is not None else None
            self._live[rid] = _Live(request_id, req, RowSampler(params, gen), detok)
            self._by_name[request_id] = rid

    def abort(self, request_id: str) -> None:
        """Free the request's KV blocks now; its next output says "abort". Unknown or finished ids: no-op."""
        with self._lock:
            rid = self._by_name.get(request_id)
            if rid is None:
                return
            self.scheduler.abort(rid)
            live = self._live[rid]
            self._aborted.append(self._output(live, [], ""))
            self._release(rid)

    def has_unfinished(self) -> bool:
        with self._lock:
            return bool(self._live) or bool(self._aborted)

    # ---- one iteration -------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        with self._lock:
            outputs, self._aborted = self._aborted, []
            batch = self.scheduler.schedule()
            if batch.empty:
                return outputs
            reqs = batch.decode + batch.prefill
            before = [len(r.output) for r in reqs]
            decode_tokens, prefill_tokens = self.runner.execute(batch, lambda r: self._live[r.id].sampler)
            self.scheduler.complete(batch, decode_tokens, prefill_tokens)
            self._steps += 1
            for k, tok in enumerate(prefill_tokens):
                if tok is not None:
                    self._tokens_in += batch.prefill[k].prompt_len
            for r, n in zip(reqs, before, strict=True):
                new = r.output[n:]
                if not new and not r.finished:
                    continue
                self._tokens_out += len(new)
                live = self._live[r.id]
                text = ""
                if live.detok is not None:
                    text = live.detok.add(new)
                    if live.detok.stopped:
                        if r.finished:
                            r.finish_reason = FinishReason.STOP
                        else:
                            self.scheduler.finish(r.id, FinishReason.STOP)
                    elif r.finished:
                        text += live.detok.flush()
                outputs.append(self._output(live, new, text))
                if r.finished:
                    self._release(r.id)
            return outputs

    def generate(
        self, prompts: list[str | list[int]], params: SamplingParams | list[SamplingParams]
    ) -> list[Completion]:
        """Run prompts to completion (all submitted at once, continuous batching); results in prompt order."""
        plist = params if isinstance(params, list) else [params] * len(prompts)
        self._generate_calls += 1
        names = [f"generate-{self._generate_calls}-{i}" for i in range(len(prompts))]
        results: dict[str, Completion] = {}
        for name, prompt, p in zip(names, prompts, plist, strict=True):
            self.add_request(name, prompt, p)
            rid = self._by_name[name]
            results[name] = Completion(name, list(self._live[rid].req.prompt), [], "", None, 0)
        while any(results[n].finish_reason is None for n in names):
            for out in self.step():
                c = results.get(out.request_id)
                if c is None:
                    continue
                c.token_ids.extend(out.new_token_ids)
                c.text += out.new_text
                if out.finished:
                    c.finish_reason, c.cached_tokens = out.finish_reason, out.cached_tokens
        return [results[n] for n in names]

    def stats(self) -> EngineStats:
        with self._lock:
            s, kv, cache = self.scheduler, self.scheduler.kv, self.scheduler.cache
            return EngineStats(
                running=s.num_running, waiting=s.num_waiting, kv_blocks_used=kv.num_used,
                kv_blocks_total=kv.total_blocks, prefix_queries=cache.lookups if cache else 0,
                prefix_hits=s.cached_tokens, tokens_in=self._tokens_in, tokens_out=self._tokens_out,
                prefill_tokens_computed=s.prefill_tokens, steps=self._steps,
                mtp_drafted=self.runner.drafted, mtp_accepted=self.runner.accepted,
            )  # fmt: skip

    # ---- internals -----------------------------------------------------------------------
    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _output(self, live: _Live, new: list[int], text: str) -> RequestOutput:
        r = live.req
        reason = r.finish_reason.value if r.finish_reason is not None else None
        return RequestOutput(
            live.request_id, list(new), text, r.finished, reason, r.prompt_len, len(r.output), r.cached_tokens
        )

    def _release(self, rid: int) -> None:
        live = self._live.pop(rid)
        del self._by_name[live.request_id]
        self._free_ids.append(rid)
