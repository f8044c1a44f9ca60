"""The worker processes of a disaggregated deployment (spawned; one torch thread each).

prefill_main: one prefill worker. Per request it reads the cached prefix blocks from the caching
pool into its working cache, prefills only the rest of the prompt, samples the first token, writes
the prompt's latent KV into the pool blocks it was given and reports (first token, the sampler's
generator state, so sampling continues the same stream on the decode side).

decode_rank_main: one rank of a decode EP group. It admits hand-overs (pool blocks -> its own paged
cache), decodes its sequences in lockstep with the other ranks (StepSync: empty passes when it has
none) and streams each step's tokens back. Messages are tuples on multiprocessing queues; KV bytes
never go through a queue, only through the shared pool.
"""

from __future__ import annotations

import contextlib
import os
import queue
import traceback
from datetime import timedelta

import torch
import torch.distributed as dist

from cloudmatrix.engine.disagg.caching_pool import cache_to_pool, pool_to_cache
from cloudmatrix.engine.disagg.shared_weights import model_from_shared
from cloudmatrix.engine.parallel import MAIN, SlotMap, StepSync, use_expert_parallel
from cloudmatrix.engine.runtime.sampling import RowSampler, sample

HOST = "127.0.0.1"


class PipeSender:
    """A worker's own result pipe with the queue's `put` (send is synchronous: nothing left to flush)."""

    def __init__(self, conn):
        self.conn = conn

    def put(self, msg) -> None:
        self.conn.send(msg)

    def close(self) -> None:
        self.conn.close()

    def join_thread(self) -> None:
        pass


def _orphaned(parent: int) -> bool:
    return os.getppid() != parent


def _exit(results) -> None:
    """Flush what this worker sent, then leave without the interpreter's teardown: collecting a model
    whose tensors are shared-memory mappings took seconds per worker at exit on this machine.
    (A Ray actor's queue is an actor: nothing to flush, and Ray ends the actor itself.)"""
    if hasattr(results, "join_thread"):
        results.close()
        results.join_thread()
        os._exit(0)


def _resolve(pool, state):
    """Local workers get the shared tensors themselves; Ray actors get files in shared memory to map
    (Ray would copy tensors): the pool as one mapped file, the weights as a torch.save file mmapped."""
    if isinstance(pool, tuple):
        path, shape, dtype = pool
        n = 1
        for d in shape:
            n *= d
        pool = torch.from_file(path, shared=True, size=n, dtype=dtype).view(*shape)
    if isinstance(state, str):
        state = torch.load(state, mmap=True, weights_only=True)
    return pool, state


def _sampler(params, gen_state: torch.Tensor | None, seed: int) -> RowSampler:
    if params.greedy:
        return RowSampler(params, None)
    gen = torch.Generator().manual_seed(params.seed if params.seed is not None else seed)
    if gen_state is not None:
        gen.set_state(gen_state)
    return RowSampler(params, gen)


def _rows(cache, sid: int) -> torch.Tensor:
    bs = cache.block_size
    table = torch.tensor(cache.block_table(sid), dtype=torch.long)
    return (table[:, None] * bs + torch.arange(bs)).reshape(-1)[: cache.seq_len(sid)]


def _prefill_batch(model, cache, pool, msgs: list, results, seed: int) -> None:
    """Prefill several requests in one packed pass: cached prefixes from the pool, the rest computed."""
    bs = cache.block_size
    sids, rows_hit = [], []
    for _, _rid, _prompt, hit_blocks, _out, _params in msgs:
        sid = cache.add_sequence()
        n_hit = len(hit_blocks) * bs
        if n_hit:
            pool_to_cache(pool, hit_blocks, cache.data, cache.plan([sid], [n_hit]).slots)
        sids.append(sid)
        rows_hit.append(n_hit)
    new = [len(m[2]) - n for m, n in zip(msgs, rows_hit, strict=True)]
    batch = cache.plan(sids, new)
    hidden = model(torch.tensor([t for m, n in zip(msgs, rows_hit, strict=True) for t in m[2][n:]]), batch, cache)
    last = torch.tensor(new).cumsum(0) - 1
    samplers = [_sampler(m[5], None, seed) for m in msgs]
    firsts = sample(model.logits(hidden[last]), samplers)
    for m, sid, n_hit, first, sampler in zip(msgs, sids, rows_hit, firsts, samplers, strict=True):
        cache_to_pool(cache.data, _rows(cache, sid)[n_hit:], pool, m[4])
        cache.free_sequence(sid)
        gen_state = sampler.generator.get_state() if sampler.generator is not None else None
        results.put(("prefilled", m[1], first, n_hit, gen_state))


def prefill_main(ctrl, results, pool, config, state, cache_blocks: int, block_size: int, seed: int) -> None:
    torch.set_num_threads(1)
    parent = os.getppid()
    try:
        pool, state = _resolve(pool, state)
        model = model_from_shared(config, state)
        cache = model.new_cache(cache_blocks, block_size)
        results.put(("ready", "prefill", os.getpid(), None))
        with torch.inference_mode():
            while True:
                try:
                    msg = ctrl.get(timeout=1.0)
                except queue.Empty:
                    if _orphaned(parent):
                        return
                    continue
                if msg[0] == "stop":
                    return
                # Batch what else is queued into packed passes, as far as the working cache holds them.
                batch, used, stop = [msg], -(-len(msg[2]) // block_size), False
                while True:
                    try:
                        nxt = ctrl.get_nowait()
                    except queue.Empty:
                        break
                    if nxt[0] == "stop":
                        stop = True
                        break
                    need = -(-len(nxt[2]) // block_size)
                    if used + need > cache.num_blocks:
                        _prefill_batch(model, cache, pool, batch, results, seed)
                        batch, used = [], 0
                    batch.append(nxt)
                    used += need
                _prefill_batch(model, cache, pool, batch, results, seed)
                if stop:
                    return
    except Exception:
        results.put(("error", "prefill", traceback.format_exc(), None))
    finally:
        _exit(results)


def decode_rank_main(
    group: tuple[int, int],
    rank: int,
    world: int,
    port: int,
    ctrl,
    results,
    pool,
    config,
    state,
    cache_blocks: int,
    block_size: int,
    seed: int,
    host: str = HOST,
) -> None:
    """Rank `rank` of decode group `group` = (index, epoch); the epoch tags every message it sends, so the
    front can drop what a failed incarnation of the group said after it was replaced."""
    torch.set_num_threads(1)
    parent = os.getppid()
    name = f"decode{group[0]}.{rank}"
    try:
        pool, state = _resolve(pool, state)
        store = dist.TCPStore(host, port, world, is_master=False, timeout=timedelta(seconds=60))
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timedelta(seconds=60))
        model = model_from_shared(config, state)
        if world > 1:
            use_expert_parallel(model, SlotMap.build(config.n_routed_experts, world))
        sync = StepSync(model) if world > 1 else None
        cache = model.new_cache(cache_blocks, block_size)
        live: dict[str, dict] = {}
        results.put(("ready", name, os.getpid(), group))
        stopping = False

        def handle(msg) -> None:
            nonlocal stopping
            if msg[0] == "stop":
                stopping = True
            elif msg[0] == "abort":
                seq = live.pop(msg[1], None)
                if seq is not None:
                    cache.free_sequence(seq["sid"])
            elif msg[0] == "admit":
                _, rid, prompt_len, blocks, first, params, gen_state, eos = msg
                sid = cache.add_sequence()
                pool_to_cache(pool, blocks, cache.data, cache.plan([sid], [prompt_len]).slots)
                live[rid] = {"sid": sid, "next": first, "n": 1, "params": params, "eos": eos,
                             "sampler": _sampler(params, gen_state, seed)}  # fmt: skip
                results.put(("admitted", group, rid))

        def decode() -> None:
            rids = list(live)
            seqs = [live[r] for r in rids]
            batch = cache.plan([s["sid"] for s in seqs], [1] * len(seqs))
            hidden = model(torch.tensor([s["next"] for s in seqs]), batch, cache)
            toks = sample(model.logits(hidden), [s["sampler"] for s in seqs])
            out = []
            for rid, s, t in zip(rids, seqs, toks, strict=True):
                s["n"] += 1
                s["next"] = t
                reason = None
                if t in s["eos"] and not s["params"].ignore_eos:
                    reason = "stop"
                elif s["n"] >= s["params"].max_tokens:
                    reason = "length"
                out.append((rid, t, reason))
                if reason:
                    cache.free_sequence(live.pop(rid)["sid"])
            results.put(("tokens", group, out))

        with torch.inference_mode():
            while True:
                if _orphaned(parent):  # the front process is gone: nobody will send "stop"
                    return
                while True:  # drain control messages without blocking
                    try:
                        handle(ctrl.get_nowait())
                    except queue.Empty:
                        break
                passes = [MAIN] if live else []
                if sync is None:
                    if stopping and not live:
                        return
                    if live:
                        decode()
                    else:
                        with contextlib.suppress(queue.Empty):
                            handle(ctrl.get(timeout=0.01))
                    continue
                plan = sync.agree(passes, done=stopping and not live)
                if plan.all_done:
                    return
                if plan.empty:  # nobody has work: wait a little for messages, no collectives
                    with contextlib.suppress(queue.Empty):
                        handle(ctrl.get(timeout=0.005))
                    continue
                sync.run(plan, [decode] if passes else [])
    except Exception:
        results.put(("error", name, traceback.format_exc(), group))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
        _exit(results)
