"""DisaggregatedEngine: the LLMEngine interface over separate prefill and decode worker processes.

    engine = DisaggregatedEngine("model_dir", config=DisaggConfig(decode_ep=2))
    engine.add_request("r1", [5, 7, 9], SamplingParams(max_tokens=8))
    while engine.has_unfinished():
        for out in engine.step(): ...
    engine.close()

The front process is the coordinator: it loads the weights once into shared memory, owns the
caching pool's index (hash -> pool block) and routes each request: prompt -> the prefill worker
(with the pool blocks of its cached prefix and fresh blocks for the rest) -> first token and KV in
the pool -> the least-loaded rank of the decode EP group, which copies the KV into its own paged
cache and streams tokens back. `step()` collects what the workers produced since the last call
(waiting up to `poll_s` for something when requests are in flight); it never runs the model itself.
"""

from __future__ import annotations

import contextlib
import os
import queue
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp

from cloudmatrix.engine.disagg.caching_pool import CachingPoolIndex, new_pool_storage
from cloudmatrix.engine.disagg.shared_weights import share_model
from cloudmatrix.engine.disagg.workers import HOST, decode_rank_main, prefill_main
from cloudmatrix.engine.runtime.params import EngineStats, RequestOutput, SamplingParams
from cloudmatrix.engine.runtime.tokenizer import IncrementalDetokenizer, eos_token_ids, load_tokenizer
from cloudmatrix.errors import CloudMatrixError


@dataclass(frozen=True)
class DisaggConfig:
    decode_ep: int = 2  # ranks of the decode EP group
    block_size: int = 16
    pool_blocks: int = 512  # caching pool size (shared host memory)
    decode_cache_blocks: int = 512  # per decode rank
    prefill_cache_blocks: int = 256
    seed: int = 0
    start_timeout_s: float = 120.0
    poll_s: float = 0.05


@dataclass
class _Req:
    rid: str
    prompt: list[int]
    params: SamplingParams
    blocks: list[int]  # pool blocks of the prompt's KV (pinned until decode admitted it)
    hashes: list[int]
    detok: IncrementalDetokenizer | None
    rank: int | None = None
    cached: int = 0
    output: list[int] = field(default_factory=list)
    finished: bool = False


class DisaggregatedEngine:
    def __init__(self, model_dir: str | Path, *, config: DisaggConfig | None = None):
        from cloudmatrix.engine.loader import load_model

        self.config = cfg = config or DisaggConfig()
        if cfg.decode_ep < 1:
            raise CloudMatrixError(f"decode_ep must be >= 1, got {cfg.decode_ep}")
        folder = Path(model_dir)
        model = load_model(folder, mtp=False)
        self.model_config = model.config
        self.model_name = folder.name
        self.max_model_len = model.config.max_position_embeddings
        self.tokenizer = load_tokenizer(folder) if (folder / "tokenizer.json").exists() else None
        self.eos_token_ids = eos_token_ids(folder, self.tokenizer)
        state = share_model(model)  # the weights, once, in shared memory
        c = model.config
        self.pool = new_pool_storage(
            cfg.pool_blocks, model.num_cache_layers, cfg.block_size, c.kv_lora_rank + c.qk_rope_head_dim, model.dtype
        )
        self.index = CachingPoolIndex(cfg.pool_blocks, cfg.block_size)
        ctx = mp.get_context("spawn")
        self._results = ctx.Queue()
        self._prefill_q = ctx.Queue()
        self._decode_q = [ctx.Queue() for _ in range(cfg.decode_ep)]
        self._store = dist.TCPStore(
            HOST, 0, cfg.decode_ep + 1, is_master=True, timeout=timedelta(seconds=60), wait_for_workers=False
        )
        self._procs: dict[str, mp.Process] = {}
        self._spawn_args = (ctx, state)
        old = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned workers
        try:
            self._procs["prefill"] = ctx.Process(
                target=prefill_main, daemon=True,
                args=(self._prefill_q, self._results, self.pool, c, state, cfg.prefill_cache_blocks, cfg.block_size,
                      cfg.seed),
            )  # fmt: skip
            for r in range(cfg.decode_ep):
                self._procs[f"decode{r}"] = ctx.Process(
                    target=decode_rank_main, daemon=True,
                    args=(r, cfg.decode_ep, self._store.port, self._decode_q[r], self._results, self.pool, c, state,
                          cfg.decode_cache_blocks, cfg.block_size, cfg.seed),
                )  # fmt: skip
            for p in self._procs.values():
                p.start()
        finally:
            if old is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = old
        self.pids: dict[str, int] = {}
        self._live: dict[str, _Req] = {}
        self._ready: list[RequestOutput] = []
        self._closed = False
        self._steps = self._tokens_in = self._tokens_out = self._computed = self._hit_tokens = 0
        try:
            self._wait_ready(time.monotonic() + cfg.start_timeout_s)
        except BaseException:
            self.close()
            raise

    # ---- lifecycle ----------------------------------------------------------------------
    def _wait_ready(self, deadline: float) -> None:
        while len(self.pids) < len(self._procs):
            try:
                msg = self._results.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise CloudMatrixError("disaggregated workers did not start in time; see their stderr") from None
            if msg[0] == "error":
                raise CloudMatrixError(f"worker {msg[1]} failed to start: {msg[2].strip().splitlines()[-1]}")
            if msg[0] == "ready":
                self.pids[msg[1]] = msg[2]

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop every worker (they finish their lockstep together); kill what does not stop in time."""
        if self._closed:
            return
        self._closed = True
        self._prefill_q.put(("stop",))
        for q in self._decode_q:
            q.put(("stop",))
        deadline = time.monotonic() + timeout_s
        for p in self._procs.values():
            p.join(timeout=max(deadline - time.monotonic(), 0.1))
        for p in self._procs.values():
            if p.is_alive():
                p.kill()
                p.join(timeout=5)

    def __enter__(self) -> DisaggregatedEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close(timeout_s=2.0)

    # ---- requests -----------------------------------------------------------------------
    def add_request(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> None:
        params.validate()
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise CloudMatrixError("this model folder has no tokenizer.json; pass the prompt as token ids")
            ids = self.tokenizer.encode(prompt).ids
        else:
            ids = [int(t) for t in prompt]
        if not ids:
            raise CloudMatrixError(f"request {request_id!r}: the prompt is empty; send at least one token")
        if min(ids) < 0 or max(ids) >= self.model_config.vocab_size:
            raise CloudMatrixError(f"request {request_id!r}: token ids must be in [0, {self.model_config.vocab_size})")
        if len(ids) + params.max_tokens > self.max_model_len:
            raise CloudMatrixError(
                f"request {request_id!r}: {len(ids)} prompt + {params.max_tokens} max_tokens exceeds the model's "
                f"{self.max_model_len} tokens; shorten the prompt or lower max_tokens"
            )
        if params.stop and self.tokenizer is None:
            raise CloudMatrixError("stop strings need a tokenizer; this model folder has none")
        if request_id in self._live:
            raise CloudMatrixError(f"request id {request_id!r} is already running; use a unique id")
        bs = self.config.block_size
        hashes = self.index.hashes(ids)
        hit = self.index.lookup(hashes[: (len(ids) - 1) // bs])  # the last token is always computed
        fresh = self.index.allocate(-(-len(ids) // bs) - len(hit))
        detok = IncrementalDetokenizer(self.tokenizer, params.stop, ids) if self.tokenizer is not None else None
        self._live[request_id] = _Req(request_id, ids, params, hit + fresh, hashes, detok)
        self._prefill_q.put(("prefill", request_id, ids, hit, fresh, params))

    def abort(self, request_id: str) -> None:
        r = self._live.get(request_id)
        if r is None or r.finished:
            return
        if r.rank is not None:
            self._decode_q[r.rank].put(("abort", request_id))
        self._finish(r, "abort", [], "")

    def has_unfinished(self) -> bool:
        return bool(self._ready) or any(not r.finished for r in self._live.values())

    def step(self) -> list[RequestOutput]:
        msgs = []
        if not self._ready and any(not r.finished for r in self._live.values()):
            with contextlib.suppress(queue.Empty):
                msgs.append(self._results.get(timeout=self.config.poll_s))
        while True:
            try:
                msgs.append(self._results.get_nowait())
            except queue.Empty:
                break
        for msg in msgs:
            self._handle(msg)
        self._steps += 1
        out, self._ready = self._ready, []
        return out

    def _handle(self, msg) -> None:
        kind = msg[0]
        if kind == "error":
            raise CloudMatrixError(f"worker {msg[1]} failed: {msg[2].strip().splitlines()[-1]}")
        if kind == "prefilled":
            _, rid, first, n_hit, gen_state = msg
            r = self._live.get(rid)
            n_full = len(r.prompt) // self.config.block_size if r else 0
            if r is not None:
                self.index.publish(r.hashes[:n_full], r.blocks[:n_full])  # the pool now holds these blocks
            if r is None or r.finished:  # aborted while prefilling
                if r is not None:
                    self.index.unpin(r.blocks)
                return
            r.cached = n_hit
            self._hit_tokens += n_hit
            self._computed += len(r.prompt) - n_hit
            self._tokens_in += len(r.prompt)
            if self._emit(r, first, self._reason(r, first)):
                self.index.unpin(r.blocks)
                return
            r.rank = min(range(self.config.decode_ep), key=self._load)
            eos = frozenset() if r.params.ignore_eos else self.eos_token_ids
            self._decode_q[r.rank].put(("admit", rid, len(r.prompt), r.blocks, first, r.params, gen_state, eos))
        elif kind == "admitted":
            r = self._live.get(msg[1])
            if r is not None:
                self.index.unpin(r.blocks)
        elif kind == "tokens":
            for rid, tok, reason in msg[1]:
                r = self._live.get(rid)
                if r is not None and not r.finished:
                    self._emit(r, tok, reason)

    def _load(self, rank: int) -> int:
        return sum(1 for r in self._live.values() if r.rank == rank and not r.finished)

    def _reason(self, r: _Req, tok: int) -> str | None:
        if tok in self.eos_token_ids and not r.params.ignore_eos:
            return "stop"
        return "length" if len(r.output) + 1 >= r.params.max_tokens else None

    def _emit(self, r: _Req, tok: int, reason: str | None) -> bool:
        """Record one token; True when the request finished."""
        r.output.append(tok)
        self._tokens_out += 1
        text = ""
        if r.detok is not None:
            text = r.detok.add([tok])
            if r.detok.stopped:
                if reason is None and r.rank is not None:
                    self._decode_q[r.rank].put(("abort", r.rid))
                reason = "stop"
            elif reason is not None:
                text += r.detok.flush()
        if reason is None:
            self._ready.append(self._output(r, [tok], text, None))
            return False
        self._finish(r, reason, [tok], text)
        return True

    def _finish(self, r: _Req, reason: str, new: list[int], text: str) -> None:
        r.finished = True
        self._ready.append(self._output(r, new, text, reason))
        del self._live[r.rid]  # late worker messages for it are ignored

    def _output(self, r: _Req, new: list[int], text: str, reason: str | None) -> RequestOutput:
        return RequestOutput(
            r.rid, list(new), text, reason is not None, reason, len(r.prompt), len(r.output), r.cached
        )

    def stats(self) -> EngineStats:
        running = sum(1 for r in self._live.values() if r.rank is not None)
        return EngineStats(
            running=running, waiting=len(self._live) - running,
            kv_blocks_used=self.index.num_blocks - len(self.index._free), kv_blocks_total=self.index.num_blocks,
            prefix_queries=self.index.lookups, prefix_hits=self._hit_tokens, tokens_in=self._tokens_in,
            tokens_out=self._tokens_out, prefill_tokens_computed=self._computed, steps=self._steps,
            mtp_drafted=0, mtp_accepted=0,
        )  # fmt: skip
