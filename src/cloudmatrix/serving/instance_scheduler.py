"""One colocated instance, as the engine runs it: continuous batching with chunked prefill.

It composes the pieces the simulator drives: a `PrefillQueue` (token budget, chunking), a
`DecodeInstance` (slots, KV admission), one `KVBlockManager` in block-id mode and, optionally,
the `PrefixCache` naming KV blocks by content. Each step:

    batch = scheduler.schedule()          # decode slots (1 + draft tokens each) + prefill chunks
    ...the runtime runs the forward pass and samples...
    scheduler.complete(batch, decode_tokens, prefill_tokens)

A request's KV for its whole prompt plus `max_tokens` (plus the draft tokens a verification pass
writes) is reserved when it leaves the waiting queue, all-or-nothing, as the decode instance does
for the simulator: nothing is ever preempted, and a request that does not fit leaves nothing held.
A prefix-cache hit shares the cached prompt blocks (their KV is not recomputed); when a prompt's
prefill ends its full blocks are offered to the cache, which keeps a reference so they outlive the
request and are evicted least recently used first when blocks run short.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.serving.decode_scheduler import DecodeInstance
from cloudmatrix.serving.kv_blocks import KVBlockManager
from cloudmatrix.serving.prefill_scheduler import PrefillQueue
from cloudmatrix.serving.prefix_cache import PrefixCache, hash_token_blocks
from cloudmatrix.serving.request import FinishReason, Request, Status


@dataclass
class StepBatch:
    decode: list[Request] = field(default_factory=list)  # slot order; each brings 1 + draft_tokens tokens
    decode_slots: list[int] = field(default_factory=list)
    prefill: list[Request] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)  # prompt range [start, end) computed per prefill request
    ends: list[int] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.decode and not self.prefill

    def finishing(self, k: int) -> bool:
        """Whether prefill request k's chunk is the last of its prompt (its logits give a token)."""
        return self.ends[k] == self.prefill[k].prompt_len


class InstanceScheduler:
    def __init__(
        self,
        kv: KVBlockManager,
        *,
        max_seqs: int,
        token_budget: int,
        prefix_cache: PrefixCache | None = None,
        draft_tokens: int = 0,
        policy: str = "fcfs",
    ) -> None:
        if token_budget < 1 or max_seqs < 1:
            raise CloudMatrixError(f"max_seqs ({max_seqs}) and token_budget ({token_budget}) must be >= 1")
        if prefix_cache is not None and prefix_cache.block_size != kv.block_size:
            raise CloudMatrixError("the prefix cache and the KV pool must use the same block size")
        self.kv = kv
        self.cache = prefix_cache
        self.draft_tokens = int(draft_tokens)
        self.max_seqs = int(max_seqs)
        self.decoder = DecodeInstance(max_seqs, kv)
        self.prefill = PrefillQueue(token_budget, policy)
        self.waiting: deque[Request] = deque()
        self.requests: dict[int, Request] = {}  # live (not finished) requests by id
        self.prefilling = 0
        self.prefill_tokens = 0  # prompt tokens computed
        self.cached_tokens = 0  # prompt tokens served from the prefix cache instead

    # ---- requests ------------------------------------------------------------------------
    def reserve_tokens(self, req: Request) -> int:
        """KV tokens a request holds from admission to its end."""
        return req.prompt_len + req.max_tokens + self.draft_tokens

    def add(self, req: Request) -> None:
        if req.id in self.requests:
            raise CloudMatrixError(f"request id {req.id} is already live; use a new id")
        need = self.kv.blocks_for(self.reserve_tokens(req))
        if need > self.kv.total_blocks:
            raise CloudMatrixError(
                f"a request of {req.prompt_len} prompt + {req.max_tokens} output tokens needs {need} KV blocks "
                f"but the cache has {self.kv.total_blocks}; shorten it or give the engine more KV blocks"
            )
        if self.cache is not None and not req.block_hashes:
            req.block_hashes = hash_token_blocks(req.prompt, self.kv.block_size)
        self.requests[req.id] = req
        self.waiting.append(req)

    def abort(self, request_id: int) -> Request | None:
        """End a live request now and free its KV blocks; None if it is not live."""
        req = self.requests.get(request_id)
        if req is not None:
            self._end(req, FinishReason.ABORT)
        return req

    def finish(self, request_id: int, reason: FinishReason = FinishReason.STOP) -> None:
        """End a request the runtime decided is done (a stop string); frees its blocks."""
        req = self.requests.get(request_id)
        if req is not None:
            self._end(req, reason)

    @property
    def num_running(self) -> int:
        return self.decoder.running + self.decoder.queued + self.prefilling

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def has_unfinished(self) -> bool:
        return bool(self.requests)

    # ---- one step ------------------------------------------------------------------------
    def schedule(self) -> StepBatch:
        """The next step's work; empty when nothing can run (nothing live, or waiting for blocks)."""
        self.decoder.admit()
        self._admit_waiting()
        slots, ids = self.decoder.slots()
        b = StepBatch(decode=[self.requests[r] for r in ids.tolist()], decode_slots=slots.tolist())
        budget = self.prefill.token_budget - len(b.decode) * (1 + self.draft_tokens)
        if budget > 0 and len(self.prefill):
            pb = self.prefill.next_batch(budget)
            b.prefill = [self.requests[r] for r in pb.requests]
            b.starts, b.ends = pb.starts, pb.ends
        return b

    def complete(self, batch: StepBatch, decode_tokens: list[list[int]], prefill_tokens: list[int | None]) -> None:
        """Apply a step's sampled tokens: per decode request the accepted run (1 + accepted drafts),
        per prefill request the first output token when its prompt is done (else None)."""
        gained = np.zeros(self.decoder.max_seqs, dtype=np.int64)
        stopped = []
        for req, slot, toks in zip(batch.decode, batch.decode_slots, decode_tokens, strict=True):
            if req.finished:  # aborted during the step
                continue
            gained[slot] = len(req.append(toks))
            if req.finished and req.finish_reason is not FinishReason.LENGTH:
                stopped.append(req.id)
        if batch.decode:
            _, done, _ = self.decoder.complete_step(gained)
            for rid in done.tolist():
                self._forget(self.requests[rid])
            self.decoder.finish(stopped)
            for rid in stopped:
                self._forget(self.requests[rid])
        for k, (req, tok) in enumerate(zip(batch.prefill, prefill_tokens, strict=True)):
            if req.finished:
                continue
            self.prefill_tokens += batch.ends[k] - batch.starts[k]
            req.computed = batch.ends[k]
            if not batch.finishing(k):
                continue
            if tok is None:
                raise ValueError(f"request {req.id} finished its prompt but got no token")
            self.prefilling -= 1
            self._offer_to_cache(req)
            req.append([tok])
            if req.finished:
                self.kv.free(req.id)
                self._forget(req)
            else:
                req.status = Status.DECODING
                self.decoder.enqueue(req.id, req.prompt_len + 1, req.max_tokens - 1, 0.0)

    # ---- internals -----------------------------------------------------------------------
    def _admit_waiting(self) -> None:
        """Waiting requests take their KV blocks, FCFS while they fit (prefix hits shared, not copied)."""
        kv, cache, bs = self.kv, self.cache, self.kv.block_size
        while self.waiting and self.num_running < self.max_seqs:
            req = self.waiting[0]
            # the last prompt token is always computed: its logits give the first output token
            hashes = req.block_hashes[: (req.prompt_len - 1) // bs] if cache is not None else []
            hit = cache.match(hashes, record=False) if hashes else []
            need = kv.blocks_for(self.reserve_tokens(req)) - len(hit)
            if need > kv.num_free and cache is not None:
                kv.release(cache.evict(need - kv.num_free, _only_cached(kv, set(hit))))
            if need > kv.num_free:
                return  # head-of-line waits for blocks; later requests do not jump it
            self.waiting.popleft()
            if cache is not None:
                cache.lookup(hashes)  # count the query and refresh the hit blocks
            if hit:
                kv.share(req.id, hit)
            if not kv.allocate(req.id, self.reserve_tokens(req)):
                raise AssertionError("KV allocation failed after the free-block check")
            req.computed = req.cached_tokens = len(hit) * bs
            self.cached_tokens += req.cached_tokens
            req.status = Status.PREFILLING
            self.prefilling += 1
            self.prefill.enqueue(req.id, req.prompt_len, req.computed)

    def _offer_to_cache(self, req: Request) -> None:
        if self.cache is None:
            return
        n = req.prompt_len // self.kv.block_size  # full prompt blocks: immutable from now on
        added, evicted = self.cache.insert_blocks(req.block_hashes[:n], self.kv.table(req.id)[:n])
        self.kv.hold(added)
        self.kv.release(evicted)

    def _end(self, req: Request, reason: FinishReason) -> None:
        if req.status is Status.WAITING:
            self.waiting.remove(req)
        elif req.status is Status.PREFILLING:
            self.prefill.remove(req.id)
            self.prefilling -= 1
            self.kv.free(req.id)
        elif req.status is Status.DECODING:
            self.decoder.finish([req.id])
        req.finish(reason)
        self._forget(req)

    def _forget(self, req: Request) -> None:
        self.requests.pop(req.id, None)


def _only_cached(kv: KVBlockManager, keep: set[int]):
    """Blocks the prefix cache may evict: held by nothing else (no running request) and not about to be shared."""
    return lambda b: kv.refs(b) == 1 and b not in keep
