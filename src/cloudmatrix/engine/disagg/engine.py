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
import dataclasses
import os
import pickle
import queue
import time
from dataclasses import dataclass, field
from datetime import timedelta
from multiprocessing.connection import wait
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp

from cloudmatrix.engine.disagg.caching_pool import CachingPoolIndex, new_pool_storage
from cloudmatrix.engine.disagg.shared_weights import share_model
from cloudmatrix.engine.disagg.workers import HOST, PipeSender, decode_rank_main, prefill_main
from cloudmatrix.engine.runtime.params import EngineStats, RequestOutput, SamplingParams
from cloudmatrix.engine.runtime.prompt import prompt_token_ids
from cloudmatrix.engine.runtime.tokenizer import IncrementalDetokenizer, eos_token_ids, load_tokenizer
from cloudmatrix.errors import CloudMatrixError


@dataclass(frozen=True)
class DisaggConfig:
    decode_ep: int = 2  # ranks of each decode EP group
    decode_groups: int = 1  # decode EP groups (instances)
    block_size: int = 16
    pool_blocks: int = 512  # caching pool size (shared host memory)
    decode_cache_blocks: int = 512  # per decode rank
    prefill_cache_blocks: int = 256
    seed: int = 0
    start_timeout_s: float = 120.0
    poll_s: float = 0.05
    max_restarts: int = 3  # per worker (group); a worker that keeps failing is an error
    ray: str | None = None  # None: local processes; "local" or a Ray address: Ray actors (ray_placement.py)


@dataclass
class _Req:
    rid: str
    prompt: list[int]
    params: SamplingParams
    blocks: list[int]  # pool blocks of the tokens handed over (pinned until decode admitted them)
    hashes: list[int]
    detok: IncrementalDetokenizer | None
    stage: str = "prefill"  # prefill -> admit (waiting for a decode group) -> decode
    group: tuple[int, int] | None = None  # (decode group, its epoch) serving it
    rank: int | None = None  # the rank of that group holding its sequence
    cached: int = 0  # prompt tokens served from the pool at its first prefill
    n_hit: int = 0  # pool blocks of the current hand-over that were cached
    output: list[int] = field(default_factory=list)
    first: int | None = None  # the token the decode side starts from
    gen_state: object = None
    finished: bool = False

    @property
    def tokens(self) -> list[int]:
        """Every token whose KV the next hand-over needs: the prompt and the output but its last token."""
        return self.prompt + self.output[:-1]


class _Worker:
    """One worker process (prefill) or EP group of processes (decode) and its control queues."""

    def __init__(self, name: str, procs: list, queues: list, epoch: int, store=None, readers=()):
        self.name, self.procs, self.queues, self.epoch, self.store = name, procs, queues, epoch, store
        self.readers = list(readers)  # local workers: the receiving ends of their result pipes
        self.ready: set[str] = set()
        self.pids: dict[str, int] = {}  # from each process's "ready" message (also right for Ray actors)
        self.failed = False

    @property
    def up(self) -> bool:
        return not self.failed and len(self.ready) == len(self.procs)

    def dead(self) -> bool:
        return any(p.exitcode is not None for p in self.procs)

    def kill(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.kill()
        for p in self.procs:
            p.join(timeout=5)


class DisaggregatedEngine:
    def __init__(self, model_dir: str | Path, *, config: DisaggConfig | None = None):
        from cloudmatrix.engine.loader import load_model

        self.config = cfg = config or DisaggConfig()
        if cfg.decode_ep < 1 or cfg.decode_groups < 1:
            raise CloudMatrixError(
                f"decode_ep and decode_groups must be >= 1, got {cfg.decode_ep} and {cfg.decode_groups}"
            )
        folder = Path(model_dir)
        model = load_model(folder, mtp=False)
        self.model_config = c = model.config
        self.model_name = folder.name
        self.max_model_len = c.max_position_embeddings
        self.tokenizer = load_tokenizer(folder) if (folder / "tokenizer.json").exists() else None
        self.eos_token_ids = eos_token_ids(folder, self.tokenizer)
        self._state = share_model(model)  # the weights, once, in shared memory: every (re)start is warm
        shape = (cfg.pool_blocks, model.num_cache_layers, cfg.block_size, c.kv_lora_rank + c.qk_rope_head_dim)
        self._ray = None
        self._host = HOST
        self._ctx = mp.get_context("spawn")
        if cfg.ray is None:
            self.pool = new_pool_storage(*shape, model.dtype)
            self._pool_arg, self._state_arg = self.pool, self._state
        else:
            from cloudmatrix.engine.disagg.ray_placement import RayPlacement

            self._ray = RayPlacement(cfg.ray, 1 + cfg.decode_groups * cfg.decode_ep, cfg.start_timeout_s)
            self._host = self._ray.host
            self.pool, self._pool_arg = self._ray.share_pool(shape, model.dtype)
            self._state_arg = self._ray.share_weights(self._state)
        self.index = CachingPoolIndex(cfg.pool_blocks, cfg.block_size)
        self._results = self._ray.queue() if self._ray is not None else None  # Ray: one shared queue
        self._live: dict[str, _Req] = {}
        self._orphans: dict[str, _Req] = {}  # aborted mid hand-over: blocks pinned until the worker replies
        self._ready: list[RequestOutput] = []
        self._closed = False
        self.restarts: dict[str, int] = {}
        # request id -> tokens it had emitted at each hand-back after a worker failure (for tests, metrics)
        self.handed_back: dict[str, list[int]] = {}
        self._steps = self._tokens_in = self._tokens_out = self._computed = self._hit_tokens = 0
        self.prefill = self._start_prefill(0)
        self.decode = [self._start_decode(g, 0) for g in range(cfg.decode_groups)]
        try:
            deadline = time.monotonic() + cfg.start_timeout_s
            while not (self.prefill.up and all(w.up for w in self.decode)):
                if time.monotonic() > deadline:
                    raise CloudMatrixError("disaggregated workers did not start in time; see their stderr")
                dead = [w.name for w in [self.prefill, *self.decode] if w.dead()]
                if dead:
                    raise CloudMatrixError(
                        f"worker {dead[0]} exited while starting (see its stderr); a script that builds the engine "
                        "needs an `if __name__ == '__main__':` guard, since workers are spawned"
                    )
                self._collect(timeout=0.1, starting=True)
        except BaseException:
            self.close()
            raise

    # ---- worker processes ---------------------------------------------------------------
    def _queue(self):
        return self._ctx.Queue() if self._ray is None else self._ray.queue()

    def _spawn(self, target, args, bundle: int):
        if self._ray is not None:
            return self._ray.spawn(target, args, bundle)
        old = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned worker
        try:
            p = self._ctx.Process(target=target, args=args, daemon=True)
            p.start()
        finally:
            if old is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = old
        return p

    def _channel(self):
        """(what the worker sends its results into, what the front reads, the front's copy of the send end).

        Local workers get a pipe each: a worker killed while writing can only break its own pipe (a shared
        multiprocessing.Queue's write lock would stay held and block every other worker). Ray actors share
        one Ray queue (an actor: a killed writer cannot corrupt it)."""
        if self._ray is not None:
            return self._results, None, None
        recv, send = self._ctx.Pipe(duplex=False)
        return PipeSender(send), recv, send

    def _start_prefill(self, epoch: int) -> _Worker:
        cfg, q = self.config, self._queue()
        out, reader, send = self._channel()
        args = (q, out, self._pool_arg, self.model_config, self._state_arg, cfg.prefill_cache_blocks,
                cfg.block_size, cfg.seed)  # fmt: skip
        proc = self._spawn(prefill_main, args, 0)
        if send is not None:
            send.close()  # the child holds its own copy: the front sees EOF when the worker is gone
        return _Worker("prefill", [proc], [q], epoch, readers=[reader] if reader is not None else [])

    def _start_decode(self, g: int, epoch: int) -> _Worker:
        cfg = self.config
        # A fresh rendezvous per incarnation: a restarted group never meets the failed one's store.
        store = dist.TCPStore(
            self._host, 0, cfg.decode_ep + 1, is_master=True, timeout=timedelta(seconds=60), wait_for_workers=False
        )
        queues = [self._queue() for _ in range(cfg.decode_ep)]
        procs, readers = [], []
        for r in range(cfg.decode_ep):
            out, reader, send = self._channel()
            procs.append(self._spawn(decode_rank_main, ((g, epoch), r, cfg.decode_ep, store.port, queues[r], out,
                                                        self._pool_arg, self.model_config, self._state_arg,
                                                        cfg.decode_cache_blocks, cfg.block_size, cfg.seed,
                                                        self._host),
                                     1 + g * cfg.decode_ep + r))  # fmt: skip
            if send is not None:
                send.close()
                readers.append(reader)
        return _Worker(f"decode{g}", procs, queues, epoch, store, readers=readers)

    @property
    def pids(self) -> dict[str, int]:
        """Worker name -> pid of the live incarnation (decode ranks are named decode{group}.{rank})."""
        out: dict[str, int] = {}
        for w in [self.prefill, *self.decode]:
            out.update(w.pids)
        return out

    def health(self) -> dict:
        """{"status": "ok" | "degraded", "workers": {name: "ok" | "restarting"}, "restarts": {name: n}}."""
        workers = {w.name: "ok" if w.up else "restarting" for w in [self.prefill, *self.decode]}
        status = "ok" if all(v == "ok" for v in workers.values()) else "degraded"
        return {"status": status, "workers": workers, "restarts": dict(self.restarts)}

    def _restart(self, w: _Worker) -> _Worker:
        n = self.restarts.get(w.name, 0) + 1
        if n > self.config.max_restarts:
            raise CloudMatrixError(
                f"worker {w.name} failed {n} times; giving up (see the worker's traceback on stderr)"
            )
        self.restarts[w.name] = n
        w.failed = True
        w.kill()
        if w.name == "prefill":
            self.prefill = self._start_prefill(w.epoch + 1)
            for r in self._live.values():  # its requests go again (their pool blocks are still pinned)
                if r.stage == "prefill":
                    self._send_prefill(r)
            return self.prefill
        g = int(w.name.removeprefix("decode"))
        self.decode[g] = self._start_decode(g, w.epoch + 1)
        for r in self._live.values():  # its requests are re-admitted from the pool, re-prefilling the rest
            if r.group is not None and r.group[0] == g and r.stage in ("decode", "admit"):
                self._hand_back(r)
        return self.decode[g]

    def _check_workers(self) -> None:
        if self.prefill.dead() and not self.prefill.failed:
            self._restart(self.prefill)
        for w in list(self.decode):
            if w.dead() and not w.failed:
                self._restart(w)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop every worker (decode ranks leave their lockstep together); kill what does not stop in time."""
        if self._closed:
            return
        self._closed = True
        workers = [w for w in [getattr(self, "prefill", None), *getattr(self, "decode", [])] if w is not None]
        for w in workers:
            for q in w.queues:
                q.put(("stop",))
        deadline = time.monotonic() + timeout_s
        for w in workers:
            for p in w.procs:
                p.join(timeout=max(deadline - time.monotonic(), 0.1))
        for w in workers:
            w.kill()
        if getattr(self, "_ray", None) is not None:
            self._ray.close()

    def __enter__(self) -> DisaggregatedEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close(timeout_s=2.0)

    # ---- requests -----------------------------------------------------------------------
    def add_request(self, request_id: str, prompt: str | list[int], params: SamplingParams) -> None:
        ids = prompt_token_ids(
            request_id,
            prompt,
            params,
            tokenizer=self.tokenizer,
            vocab_size=self.model_config.vocab_size,
            max_model_len=self.max_model_len,
        )
        if request_id in self._live:
            raise CloudMatrixError(f"request id {request_id!r} is already running; use a unique id")
        bs, cfg = self.config.block_size, self.config
        if -(-len(ids) // bs) > cfg.prefill_cache_blocks or -(-(len(ids) + params.max_tokens) // bs) > min(
            cfg.decode_cache_blocks, cfg.pool_blocks
        ):
            raise CloudMatrixError(
                f"request {request_id!r}: {len(ids)} prompt + {params.max_tokens} max_tokens tokens do not fit the "
                f"workers' KV caches ({cfg.prefill_cache_blocks} prefill / {cfg.decode_cache_blocks} decode blocks of "
                f"{bs}); shorten the request or give the workers more blocks"
            )
        detok = IncrementalDetokenizer(self.tokenizer, params.stop, ids) if self.tokenizer is not None else None
        r = _Req(request_id, ids, params, [], [], detok)
        self._plan_blocks(r)
        self._live[request_id] = r
        self._send_prefill(r)

    def _plan_blocks(self, r: _Req) -> None:
        """Pool blocks for the tokens r hands over: its cached prefix (a hit), fresh blocks for the rest."""
        bs, toks = self.config.block_size, r.tokens
        r.hashes = self.index.hashes(toks)
        hit = self.index.lookup(r.hashes[: (len(toks) - 1) // bs])  # the last token is always computed
        r.blocks = hit + self.index.allocate(-(-len(toks) // bs) - len(hit))
        r.n_hit = len(hit)

    def _send_prefill(self, r: _Req) -> None:
        r.stage = "prefill"
        hit, fresh = r.blocks[: r.n_hit], r.blocks[r.n_hit :]
        self.prefill.queues[0].put(("prefill", r.rid, r.tokens, hit, fresh, r.params))

    def _hand_back(self, r: _Req) -> None:
        """A request whose decode group failed: hand over again from the pool (cached blocks are not
        recomputed; its generated tokens but the last are prefilled; the last one feeds decode)."""
        if r.stage == "admit":  # blocks still pinned from a hand-over that never completed
            self.index.unpin(r.blocks)
        r.group = None
        self.handed_back.setdefault(r.rid, []).append(len(r.output))
        self._plan_blocks(r)
        self._send_prefill(r)

    def abort(self, request_id: str) -> None:
        r = self._live.get(request_id)
        if r is None or r.finished:
            return
        self._abort_on_decode(r)
        if r.stage == "prefill" or (r.stage == "admit" and r.group is not None):
            self._orphans[r.rid] = r  # its pinned blocks are released when the worker's reply arrives
        elif r.stage == "admit":
            self.index.unpin(r.blocks)
        r.stage = "aborted"
        self._finish(r, "abort", [], "")

    def _abort_on_decode(self, r: _Req) -> None:
        """Free r's sequence on its decode rank (queued after its admit, so the rank sees both in order)."""
        if r.group is not None and self._decode_worker(r.group) is not None:
            self.decode[r.group[0]].queues[r.rank].put(("abort", r.rid))

    def has_unfinished(self) -> bool:
        return bool(self._ready) or bool(self._live)

    def step(self) -> list[RequestOutput]:
        self._collect(self.config.poll_s if not self._ready and self._live else 0.0)
        self._check_workers()
        self._admit_waiting()
        self._steps += 1
        out, self._ready = self._ready, []
        return out

    # ---- worker messages ----------------------------------------------------------------
    def _collect(self, timeout: float, starting: bool = False) -> None:
        if self._ray is None:
            self._collect_pipes(timeout, starting)
            return
        msgs = []
        if timeout > 0:
            with contextlib.suppress(queue.Empty):
                msgs.append(self._results.get(timeout=timeout))
        while True:
            try:
                msgs.append(self._results.get_nowait())
            except queue.Empty:
                break
        for msg in msgs:
            self._handle(msg, starting)

    def _collect_pipes(self, timeout: float, starting: bool) -> None:
        workers = [w for w in [self.prefill, *getattr(self, "decode", [])] if not w.failed]
        readers = [r for w in workers for r in w.readers if not r.closed]
        msgs = []
        for conn in wait(readers, timeout=timeout):
            try:
                while conn.poll():
                    msgs.append(conn.recv())
            except (EOFError, OSError, pickle.UnpicklingError):  # the worker is gone (its exit is noticed)
                conn.close()
        for msg in msgs:
            self._handle(msg, starting)

    def _decode_worker(self, group: tuple[int, int]) -> _Worker | None:
        """The decode group that sent a message, or None if that incarnation was replaced."""
        w = self.decode[group[0]] if group[0] < len(getattr(self, "decode", [])) else None
        return w if w is not None and w.epoch == group[1] and not w.failed else None

    def _handle(self, msg, starting: bool) -> None:
        kind = msg[0]
        if kind == "ready":
            _, name, pid, group = msg
            w = self.prefill if group is None else self._decode_worker(group)
            if w is not None:
                w.ready.add(name)
                w.pids[name] = pid
        elif kind == "error":
            _, name, tb, group = msg
            if starting:
                raise CloudMatrixError(f"worker {name} failed to start: {tb.strip().splitlines()[-1]}")
            w = self.prefill if group is None else self._decode_worker(group)
            if w is not None and not w.failed:
                self._restart(w)
        elif kind == "prefilled":
            self._on_prefilled(*msg[1:])
        elif kind == "admitted":
            _, group, rid = msg
            orphan = self._orphans.pop(rid, None)
            if orphan is not None:
                self.index.unpin(orphan.blocks)
                return
            r = self._live.get(rid)
            if r is not None and r.group == tuple(group) and r.stage == "admit":
                r.stage = "decode"
                self.index.unpin(r.blocks)
        elif kind == "tokens":
            _, group, out = msg
            for rid, tok, reason in out:
                r = self._live.get(rid)
                if r is not None and r.group == tuple(group) and r.stage == "decode":
                    self._emit(r, tok, reason)

    def _on_prefilled(self, rid: str, first: int, n_hit: int, gen_state) -> None:
        orphan = self._orphans.get(rid)
        if orphan is not None and orphan.group is None:  # aborted while prefilling
            del self._orphans[rid]
            self.index.unpin(orphan.blocks)
            return
        r = self._live.get(rid)
        if r is None or r.stage != "prefill":  # aborted meanwhile, or a duplicate from a replaced worker
            return
        n_full = len(r.tokens) // self.config.block_size
        self.index.publish(r.hashes[:n_full], r.blocks[:n_full])  # the pool now holds these blocks
        self._hit_tokens += n_hit
        self._computed += len(r.tokens) - n_hit
        if not r.output:  # a new request (not a hand-back after a failure)
            r.cached = n_hit
            self._tokens_in += len(r.prompt)
            if self._emit(r, first, self._reason(r, first)):
                self.index.unpin(r.blocks)
                return
        r.first = r.output[-1]  # a hand-back resumes from its last emitted token
        r.gen_state = gen_state if len(r.output) == 1 else None
        r.stage = "admit"
        self._admit_waiting()

    def _admit_waiting(self) -> None:
        """Hand prefilled requests (oldest first) to the decode rank with the most unreserved KV blocks.

        A request reserves its worst case (prompt + max_tokens) on its rank, so a decode step never runs
        out of blocks; a request that fits nowhere yet waits (its KV stays in the pool)."""
        cfg = self.config
        for r in self._live.values():
            if r.stage != "admit" or r.group is not None:
                continue
            slots = [(g, k) for g, w in enumerate(self.decode) if w.up for k in range(cfg.decode_ep)]
            if not slots:
                return  # every decode group is restarting
            g, k = min(slots, key=lambda s: self._reserved(*s))
            if self._reserved(g, k) + self._need(r) > cfg.decode_cache_blocks:
                return
            w = self.decode[g]
            r.group, r.rank = (g, w.epoch), k
            eos = frozenset() if r.params.ignore_eos else self.eos_token_ids
            params = dataclasses.replace(r.params, max_tokens=r.params.max_tokens - len(r.output) + 1)
            w.queues[k].put(("admit", r.rid, len(r.tokens), r.blocks, r.first, params, r.gen_state, eos))

    def _need(self, r: _Req) -> int:
        return -(-(len(r.prompt) + r.params.max_tokens) // self.config.block_size)

    def _reserved(self, g: int, k: int) -> int:
        return sum(self._need(r) for r in self._live.values() if r.group is not None and (r.group[0], r.rank) == (g, k))

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
                if reason is None:
                    self._abort_on_decode(r)
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
        running = sum(1 for r in self._live.values() if r.stage == "decode")
        return EngineStats(
            running=running, waiting=len(self._live) - running,
            kv_blocks_used=self.index.num_blocks - len(self.index._free), kv_blocks_total=self.index.num_blocks,
            prefix_queries=self.index.lookups, prefix_hits=self._hit_tokens, tokens_in=self._tokens_in,
            tokens_out=self._tokens_out, prefill_tokens_computed=self._computed, steps=self._steps,
            mtp_drafted=0, mtp_accepted=0,
        )  # fmt: skip
