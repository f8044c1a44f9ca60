"""Decode scheduling for one instance: continuous batching over fixed slots, paged KV admission.

State lives in numpy arrays packed by position: the first `running` entries are the live
sequences (entry i sits in slot `slot_of[i]`), so one decode step for thousands of sequences
is a handful of operations on contiguous slices that never touch free slots. A sequence that
finishes leaves a hole that the last live entry moves into. Slots themselves keep their
meaning (a die's range, the index into a step's per-slot tokens) and are handed out exactly as
before: per die, lowest first, a freed slot reused first. Admission is FCFS: a request waits
until a slot is free and the KV cache can hold its whole context plus every token it may still
generate (reserved up front, so nothing is ever preempted or dropped).

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
        # per live sequence, packed: entries [0, running) are live, in no particular order
        self.req = np.full(self.max_seqs, -1, dtype=np.int64)  # request id
        self.remaining = np.zeros(self.max_seqs, dtype=np.int64)  # tokens still to generate
        self.context = np.zeros(self.max_seqs, dtype=np.int64)  # tokens in the KV cache
        self.last_token = np.zeros(self.max_seqs)  # time of the sequence's latest token
        self.max_gap = np.zeros(self.max_seqs)  # longest inter-token gap seen by the request
        self.slot_of = np.zeros(self.max_seqs, dtype=np.int64)  # the slot the entry occupies
        self.die_of = np.zeros(self.max_seqs, dtype=np.int64)  # its die (slot // per_die)
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
        """Move waiting requests into free slots while their KV reservation fits (FCFS, no overtaking).

        Returns how many were admitted, k: they are the last k live entries, `req[running - k:running]`,
        in admission order."""
        waiting, allocate, die_count, free = self.waiting, self.kv.allocate, self.die_count, self._free_by_die
        n = self._running
        start = n
        added = 0
        while waiting and n < self.max_seqs:
            request, context, remaining, last = waiting[0]
            if not allocate(request, context + remaining):
                break  # head-of-line waits for blocks; later requests do not jump it
            waiting.popleft()
            die = int(die_count.argmin())  # the least-loaded DP rank takes it
            die_count[die] += 1
            self.slot_of[n] = free[die].pop()
            self.die_of[n] = die
            self.req[n] = request
            self.context[n] = context
            self.remaining[n] = remaining
            self.last_token[n] = last
            self.max_gap[n] = 0.0
            added += context
            n += 1
        self._running = n
        self.context_sum += added
        return n - start

    def batch(self) -> tuple[int, float]:
        """(sequences, mean context) of the next step."""
        n = self.running
        return (n, self.context_sum / n) if n else (0, 0.0)

    def busiest_die(self) -> tuple[int, float]:
        """(most sequences on one die, largest per-die KV sum divided by that count): the shape that
        sets the step's pace. With one die this is (running, mean context)."""
        n = self._running
        if n == 0:
            return 0, 0.0
        most = int(self.die_count.max())
        if self.dies == 1:
            return most, self.context_sum / most
        # float sums of integer contexts are exact (far below 2**53)
        per_die = np.bincount(self.die_of[:n], weights=self.context[:n], minlength=self.dies)
        return most, int(per_die.max()) / most

    def complete_step(self, tokens: np.ndarray, now: float = 0.0) -> tuple[int, np.ndarray, np.ndarray]:
        """Apply one step finishing at `now`: slot i gains `tokens[i]` tokens (MTP may give more than
        one; anything past the request's output length, and anything on a free slot, is discarded).

        Returns (tokens generated, finished request ids, their longest inter-token gap), in slot order."""
        n = self._running
        if n == 0:
            return 0, np.empty(0, dtype=np.int64), np.empty(0)
        slots = self.slot_of[:n]
        remaining = self.remaining[:n]
        gained = np.minimum(np.asarray(tokens)[slots], remaining)
        remaining -= gained
        self.context[:n] += gained
        total = int(gained.sum())
        self.context_sum += total
        gap = self.max_gap[:n]
        np.maximum(gap, now - self.last_token[:n], out=gap)
        self.last_token[:n] = now
        done = np.flatnonzero(remaining == 0)
        if done.size > 1:
            done = done[np.argsort(slots[done])]
        finished = self.req[done]
        gaps = gap[done]
        self._release(done)
        return total, finished, gaps

    def finish(self, request_ids: np.ndarray | list[int]) -> np.ndarray:
        """End requests early (EOS, a stop string, an abort): free their slots or queue places and KV.

        Returns the ids that were here (running or waiting)."""
        ids = np.asarray(request_ids, dtype=np.int64)
        if ids.size == 0:
            return ids
        n = self._running
        done = np.flatnonzero(np.isin(self.req[:n], ids))
        done = done[np.argsort(self.slot_of[done])]
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
        n = self._running
        order = np.argsort(self.slot_of[:n])
        return self.slot_of[order], self.req[order]

    def _release(self, done: np.ndarray) -> None:
        """Free the live entries at positions `done` (in slot order, so freed slots are reused as before)
        and move the last live entries into the holes."""
        k = done.size
        if not k:
            return
        self.kv.free_many(self.req[done], distinct=True)  # a request holds one entry
        self.context_sum -= int(self.context[done].sum())
        slots, dies = self.slot_of[done], self.die_of[done]
        self.die_count -= np.bincount(dies, minlength=self.dies)
        free = self._free_by_die
        for slot, die in zip(slots.tolist(), dies.tolist(), strict=True):
            free[die].append(slot)
        n = self._running
        keep = n - k
        self._running = keep
        tail = np.ones(k, dtype=bool)  # which of the last k entries stay live
        late = done[done >= keep]
        tail[late - keep] = False
        holes = done[done < keep]
        if holes.size:
            movers = keep + np.flatnonzero(tail)
            for a in (self.req, self.remaining, self.context, self.last_token, self.max_gap, self.slot_of, self.die_of):
                a[holes] = a[movers]
