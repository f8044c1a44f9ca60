"""Decode scheduling for one instance: continuous batching over fixed slots, paged KV admission.

State lives in numpy arrays indexed by slot, so one decode step for thousands of
sequences is a handful of whole-array operations (free slots hold zeros, so they need
no masking). Admission is FCFS: a request waits until a slot is free and the KV cache
can hold its whole context plus every token it may still generate (reserved up front,
so nothing is ever preempted or dropped).

Attention is data-parallel: each die owns the sequences in its slots (slots are laid out
die by die), a new request goes to the die with the fewest sequences, and a step lasts as
long as its busiest die, so `busiest_die()` reports the most sequences on a die and the
largest KV any die must read.

The engine drives the same object: a request can also end before its output length (EOS, a
stop string, an abort) through `finish`, and `now` is only the simulator's clock for its
inter-token-gap statistics (the engine passes none).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from cloudmatrix.serving.kv_blocks import KVBlockManager


class DecodeInstance:
    def __init__(self, max_seqs: int, kv: KVBlockManager, dies: int = 1):
        if dies < 1 or max_seqs % dies:
            raise ValueError(f"max_seqs={max_seqs} must be a positive multiple of dies={dies}")
        self.max_seqs = int(max_seqs)
        self.dies = int(dies)
        self.per_die = self.max_seqs // self.dies
        self.kv = kv
        self.req = np.full(self.max_seqs, -1, dtype=np.int64)  # request id per slot, -1 = free
        self.remaining = np.zeros(self.max_seqs, dtype=np.int64)  # tokens still to generate (0 when free)
        self.context = np.zeros(self.max_seqs, dtype=np.int64)  # tokens in the KV cache (0 when free)
        self.last_token = np.zeros(self.max_seqs)  # time of the slot's latest token
        self.max_gap = np.zeros(self.max_seqs)  # longest inter-token gap seen by the slot's request
        # free slots per die (popped from the end, so a die fills its slots in order)
        self._free_by_die = [
            list(range((d + 1) * self.per_die - 1, d * self.per_die - 1, -1)) for d in range(self.dies)
        ]
        self.die_count = np.zeros(self.dies, dtype=np.int64)  # sequences per die
        self._running = 0
        self.waiting: deque[tuple[int, int, int, float]] = deque()  # (request, context, remaining, last token)
        self.context_sum = 0
        self.busy = False  # a step is in flight

    @property
    def running(self) -> int:
        return self._running

    @property
    def queued(self) -> int:
        return len(self.waiting)

    def enqueue(self, request: int, context: int, remaining: int, last_token_time: float) -> None:
        if remaining < 1:
            raise ValueError("a decode request needs at least one token to generate")
        self.waiting.append((request, context, remaining, last_token_time))

    def admit(self) -> int:
        """Move waiting requests into free slots while their KV reservation fits (FCFS, no overtaking)."""
        admitted = 0
        while self.waiting and self._running < self.max_seqs:
            request, context, remaining, last = self.waiting[0]
            if not self.kv.allocate(request, context + remaining):
                break  # head-of-line waits for blocks; later requests do not jump it
            self.waiting.popleft()
            die = int(self.die_count.argmin())  # the least-loaded DP rank takes it
            slot = self._free_by_die[die].pop()
            self.die_count[die] += 1
            self._running += 1
            self.req[slot] = request
            self.context[slot] = context
            self.remaining[slot] = remaining
            self.last_token[slot] = last
            self.max_gap[slot] = 0.0
            self.context_sum += context
            admitted += 1
        return admitted

    def batch(self) -> tuple[int, float]:
        """(sequences, mean context) of the next step."""
        n = self.running
        return (n, self.context_sum / n) if n else (0, 0.0)

    def busiest_die(self) -> tuple[int, float]:
        """(most sequences on one die, largest per-die KV sum divided by that count): the shape that
        sets the step's pace. With one die this is (running, mean context)."""
        if self._running == 0:
            return 0, 0.0
        most = int(self.die_count.max())
        if self.dies == 1:
            return most, self.context_sum / most
        heaviest = int(self.context.reshape(self.dies, self.per_die).sum(axis=1).max())
        return most, heaviest / most

    def complete_step(self, tokens: np.ndarray, now: float = 0.0) -> tuple[int, np.ndarray, np.ndarray]:
        """Apply one step finishing at `now`: slot i gains `tokens[i]` tokens (MTP may give more than
        one; anything past the request's output length, and anything on a free slot, is discarded).

        Returns (tokens generated, finished request ids, their longest inter-token gap)."""
        gained = np.minimum(tokens, self.remaining)
        self.remaining -= gained
        self.context += gained
        total = int(gained.sum())
        self.context_sum += total
        live = self.req >= 0
        np.maximum(self.max_gap, now - self.last_token, out=self.max_gap, where=live)
        np.copyto(self.last_token, now, where=live)
        done = np.flatnonzero(live & (self.remaining == 0))
        finished = self.req[done]
        gaps = self.max_gap[done]
        self._release(done)
        return total, finished, gaps

    def finish(self, request_ids: np.ndarray | list[int]) -> np.ndarray:
        """End requests early (EOS, a stop string, an abort): free their slots or queue places and KV.

        Returns the ids that were here (running or waiting)."""
        ids = np.asarray(request_ids, dtype=np.int64)
        if ids.size == 0:
            return ids
        done = np.flatnonzero(np.isin(self.req, ids))
        ended = [self.req[done]]
        self._release(done)
        if self.waiting:
            gone = {int(r) for r in ids.tolist()}
            queued = [w[0] for w in self.waiting if w[0] in gone]
            if queued:
                self.waiting = deque(w for w in self.waiting if w[0] not in gone)
                self.kv.free_many(np.asarray(queued, dtype=np.int64))
                ended.append(np.asarray(queued, dtype=np.int64))
        return np.concatenate(ended)

    def slots(self) -> tuple[np.ndarray, np.ndarray]:
        """(occupied slots, their request ids), in slot order."""
        occupied = np.flatnonzero(self.req >= 0)
        return occupied, self.req[occupied]

    def _release(self, done: np.ndarray) -> None:
        if not done.size:
            return
        self.kv.free_many(self.req[done])
        self.context_sum -= int(self.context[done].sum())
        self.context[done] = 0
        self.remaining[done] = 0
        self.req[done] = -1
        dies = done // self.per_die
        np.subtract.at(self.die_count, dies, 1)
        self._running -= done.size
        for slot, die in zip(done.tolist(), dies.tolist(), strict=True):
            self._free_by_die[die].append(slot)
