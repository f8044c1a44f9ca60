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
die by die), a new request goes to the die with the fewest sequences (`routing="least_loaded"`)
or, as SGLang's data-parallel controller sends requests (`routing="round_robin"`), to the next
rank in turn at arrival, where it waits for a slot of that rank even when another rank has one
free; a rank's queue is FCFS, the ranks' queues do not block each other. A step lasts as
long as its busiest die, so `busiest_die()` reports the most sequences on a die and the
largest KV any die must read. A "die" here is one attention-DP rank: under attention TP the
simulator builds one per TP group of `tp` dies, which all work on the group's sequences, so
`busiest_die()` reports the rank's count divided by `tp`, the share per die the cost model takes
(a fraction when the group holds fewer sequences than dies). The slots need not divide evenly:
a serving stack's max batch is set per rank, and an instance whose slot count is not a multiple
of its ranks gives the first `max_seqs % dies` ranks one slot more.

The engine drives the same object: a request can also end before its output length (EOS, a
stop string, an abort) through `finish`, and `now` is only the simulator's clock for its
inter-token-gap statistics (the engine passes none).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from cloudmatrix.serving.kv_blocks import KVBlockManager

ROUTINGS = ("least_loaded", "round_robin")


class DecodeInstance:
    def __init__(self, max_seqs: int, kv: KVBlockManager, dies: int = 1, tp: int = 1, routing: str = "least_loaded"):
        if dies < 1 or max_seqs < dies:
            raise ValueError(f"max_seqs={max_seqs} must be at least dies={dies} (one slot per die)")
        if tp < 1:
            raise ValueError(f"tp={tp} must be at least 1")
        if routing not in ROUTINGS:
            raise ValueError(f"routing={routing!r}: use one of {', '.join(ROUTINGS)}")
        # requests are bound to a rank at arrival only with round-robin over several ranks
        self._round_robin = routing == "round_robin" and dies > 1
        self._next_rank = 0
        self.max_seqs = int(max_seqs)
        self.dies = int(dies)
        self.tp = int(tp)  # dies sharing each rank's sequences (attention TP)
        # slots per die: the first max_seqs % dies dies hold one more (slots stay laid out die by die)
        base, extra = divmod(self.max_seqs, self.dies)
        self.capacity = np.full(self.dies, base, dtype=np.int64)
        self.capacity[:extra] += 1
        starts = np.concatenate(([0], np.cumsum(self.capacity)))
        self._uneven = extra > 0
        self.per_die = base  # slots per die when they divide evenly (the smaller count otherwise)
        self.kv = kv
        # per live sequence, packed: entries [0, running) are live, in no particular order. The integer
        # and the float fields are rows of one array each, so filling a hole moves each group at once.
        self._ints = np.zeros((5, self.max_seqs), dtype=np.int64)
        self._floats = np.zeros((3, self.max_seqs))
        self.req = self._ints[0]  # request id
        self.remaining = self._ints[1]  # tokens still to generate
        self.context = self._ints[2]  # tokens in the KV cache
        self.slot_of = self._ints[3]  # the slot the entry occupies
        self.die_of = self._ints[4]  # its die (the rank whose slot range holds the slot)
        self.last_token = self._floats[0]  # time of the sequence's latest token
        self.max_gap = self._floats[1]  # longest inter-token gap seen by the request
        # when the entry's KV is all there (a stack that pulls KV after admitting, TensorRT-LLM's generation
        # server, sets it; 0 otherwise): an entry computes only in steps that start at or after it
        self.ready_at = self._floats[2]
        self._step_start: float | None = None  # set by begin_step when entries may be waiting for their KV
        # free slots per die (popped from the end, so a die fills its slots in order)
        self._free_by_die = [list(range(int(starts[d + 1]) - 1, int(starts[d]) - 1, -1)) for d in range(self.dies)]
        self.die_count = np.zeros(self.dies, dtype=np.int64)  # sequences per die
        self._running = 0
        # (request, context, remaining, last token, rank bound at arrival or -1)
        self.waiting: deque[tuple[int, int, int, float, int]] = deque()
        self.context_sum = 0
        self.busy = False  # a step is in flight

    @property
    def running(self) -> int:
        return self._running

    @property
    def queued(self) -> int:
        return len(self.waiting)

    def _ranks(self, k: int) -> list[int]:
        """The ranks the next `k` arrivals are bound to (round-robin), or -1 each (chosen at admission)."""
        if not self._round_robin:
            return [-1] * k
        first = self._next_rank
        self._next_rank = (first + k) % self.dies
        return [(first + i) % self.dies for i in range(k)]

    def enqueue(self, request: int, context: int, remaining: int, last_token_time: float) -> None:
        if remaining < 1:
            raise ValueError("a decode request needs at least one token to generate")
        self.waiting.append((request, context, remaining, last_token_time, self._ranks(1)[0]))

    def enqueue_many(
        self, requests: list[int], contexts: list[int], remaining: list[int], last_token_time: float
    ) -> None:
        """`enqueue` for several requests at once (all with the same last-token time), in order."""
        if remaining and min(remaining) < 1:
            raise ValueError("a decode request needs at least one token to generate")
        k = len(requests)
        self.waiting.extend(zip(requests, contexts, remaining, [last_token_time] * k, self._ranks(k), strict=True))

    def admit(self, now: float | None = None) -> int:
        """Move waiting requests into free slots while their KV reservation fits (FCFS, no overtaking).
        With `now`, an admitted request's last token counts from `now` instead of its queued time.

        Returns how many were admitted, k: they are the last k live entries, `req[running - k:running]`,
        in admission order."""
        waiting, allocate = self.waiting, self.kv.allocate
        n = self._running
        room = self.max_seqs - n
        taken: list[tuple[int, int, int, float, int]] = []
        if self._round_robin:
            taken = self._take_per_rank(room)
        else:
            while waiting and len(taken) < room:
                head = waiting[0]
                if not allocate(head[0], head[1] + head[2]):
                    break  # head-of-line waits for blocks; later requests do not jump it
                taken.append(waiting.popleft())
        k = len(taken)
        if k:
            reqs, contexts, remaining, lasts, bound = zip(*taken, strict=True)
            dies = list(bound) if self._round_robin else self._least_loaded(k)
            free = self._free_by_die
            slots = [free[d].pop() for d in dies]
            self._ints[:, n : n + k] = (reqs, remaining, contexts, slots, dies)
            self._floats[:, n : n + k] = (lasts if now is None else (now,) * k, (0.0,) * k, (0.0,) * k)
            self._running = n + k
            self.context_sum += sum(contexts)
        return k

    def _take_per_rank(self, room: int) -> list[tuple[int, int, int, float, int]]:
        """Round-robin routing: the waiting requests whose rank has a free slot, FCFS within each rank (a rank's
        head that does not fit holds back that rank's later requests only); the KV pool is shared, so a
        reservation that fails stops the pass. Counts the taken ones into their ranks."""
        open_ = (self.capacity - self.die_count).tolist()
        n_open = sum(1 for x in open_ if x > 0)  # ranks that may still take one: the pass ends at 0
        taken: list[tuple[int, int, int, float, int]] = []
        kept: deque[tuple[int, int, int, float, int]] = deque()
        waiting, allocate, count = self.waiting, self.kv.allocate, self.die_count
        while waiting and n_open and len(taken) < room:
            w = waiting.popleft()
            r = w[4]
            if open_[r] > 0:
                if not allocate(w[0], w[1] + w[2]):
                    kept.append(w)
                    break
                open_[r] -= 1
                count[r] += 1
                taken.append(w)
                n_open -= open_[r] == 0
            else:
                kept.append(w)  # its rank is full (or refused an earlier request): it waits
        kept.extend(waiting)
        self.waiting = kept
        return taken

    def _least_loaded(self, k: int) -> list[int]:
        """The dies `k` admissions go to, in order, one at a time to the least-loaded die with a free slot
        (lowest index among equals); counts them in. Taken level by level: at level L every die holding <= L
        sequences gets one, in index order, which is what k successive argmins pick. `admit` never asks
        for more than the free slots, so the loop ends."""
        count = self.die_count
        if self.dies == 1:
            count[0] += k
            return [0] * k
        dies: list[int] = []
        level = int(count.min())
        cap = self.capacity
        while len(dies) < k:
            open_ = count <= level
            if self._uneven:
                open_ &= count < cap  # a die with one slot fewer is full one level earlier
            eligible = open_.nonzero()[0][: k - len(dies)]
            count[eligible] += 1  # distinct dies: a plain fancy add is exact
            dies += eligible.tolist()
            level += 1
        return dies

    def batch(self) -> tuple[int, float]:
        """(sequences, mean context) of the next step."""
        n = self.running
        return (n, self.context_sum / n) if n else (0, 0.0)

    def begin_step(self, start: float) -> None:
        """A step starts at `start`: only entries whose `ready_at` has passed take part in it (the rest are
        still receiving their KV); `busiest_die` and `complete_step` then count those alone."""
        self._step_start = start

    def _computing(self, n: int) -> np.ndarray | None:
        """Mask of the live entries taking part in the step in flight; None when all do."""
        if self._step_start is None:
            return None
        mask = self.ready_at[:n] <= self._step_start
        return None if mask.all() else mask

    def busiest_die(self) -> tuple[float, float]:
        """(most sequences on one rank over `tp`, the rank's largest KV sum divided by its count): the shape
        that sets the step's pace, per die. With one rank and no TP this is (running, mean context)."""
        n = self._running
        if n == 0:
            return 0, 0.0
        mask = self._computing(n)
        if mask is not None:  # some entries sit this step out: count the others
            if not mask.any():
                return 0, 0.0
            counts = np.bincount(self.die_of[:n][mask], minlength=self.dies)
            kv = np.bincount(self.die_of[:n][mask], weights=self.context[:n][mask], minlength=self.dies)
            most = int(counts.max())
            return (most if self.tp == 1 else most / self.tp), float(kv.max()) / most
        most = int(self.die_count.max())
        share = most if self.tp == 1 else most / self.tp
        if self.dies == 1:
            return share, self.context_sum / most
        # float sums of integer contexts are exact (far below 2**53)
        per_die = np.bincount(self.die_of[:n], weights=self.context[:n], minlength=self.dies)
        return share, int(per_die.max()) / most

    def complete_step(self, tokens: np.ndarray, now: float = 0.0) -> tuple[int, np.ndarray, np.ndarray]:
        """Apply one step finishing at `now`: slot i gains `tokens[i]` tokens (MTP may give more than
        one; anything past the request's output length, and anything on a free slot, is discarded).

        Returns (tokens generated, finished request ids, their longest inter-token gap), in slot order."""
        n = self._running
        if n == 0:
            return 0, np.empty(0, dtype=np.int64), np.empty(0)
        slots = self.slot_of[:n]
        remaining = self.remaining[:n]
        gained = np.minimum(np.asarray(tokens).take(slots), remaining)
        mask = self._computing(n)
        if mask is not None:
            gained[~mask] = 0  # still receiving their KV: no token, and their clock has not started
        remaining -= gained
        self.context[:n] += gained
        total = int(gained.sum())
        self.context_sum += total
        gap = self.max_gap[:n]
        if mask is None:
            np.maximum(gap, now - self.last_token[:n], out=gap)
            self.last_token[:n] = now
        else:
            gap[mask] = np.maximum(gap[mask], now - self.last_token[:n][mask])
            self.last_token[:n][mask] = now
        done = (remaining == 0).nonzero()[0]
        if done.size > 1:
            done = done[np.argsort(slots[done])]
        gaps = gap[done]
        return total, self._release(done), gaps

    def finish(self, request_ids: np.ndarray | list[int]) -> np.ndarray:
        """End requests early (EOS, a stop string, an abort): free their slots or queue places and KV.

        Returns the ids that were here (running or waiting)."""
        ids = np.asarray(request_ids, dtype=np.int64)
        if ids.size == 0:
            return ids
        n = self._running
        done = np.flatnonzero(np.isin(self.req[:n], ids))
        done = done[np.argsort(self.slot_of[done])]
        ended = [self._release(done)]
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

    def _release(self, done: np.ndarray) -> np.ndarray:
        """Free the live entries at positions `done` (in slot order, so freed slots are reused as before)
        and move the last live entries into the holes; returns their request ids."""
        k = done.size
        if not k:
            return self.req[:0].copy()
        ints = self._ints
        req, _, context, slot, die = ints[:, done]  # one gather of every integer field
        self.kv.free_many(req, distinct=True)  # a request holds one entry
        self.context_sum -= int(context.sum())
        free, count = self._free_by_die, self.die_count
        for s, d in zip(slot.tolist(), die.tolist(), strict=True):
            free[d].append(s)
            count[d] -= 1  # a few per step: cheaper than a bincount over every die
        n = self._running
        keep = n - k
        self._running = keep
        positions = done.tolist()  # a few per step: plain lists beat array masks here
        holes = [p for p in positions if p < keep]
        if holes:
            gone = set(positions)
            movers = [p for p in range(keep, n) if p not in gone]
            ints[:, holes] = ints[:, movers]
            self._floats[:, holes] = self._floats[:, movers]
        return req
