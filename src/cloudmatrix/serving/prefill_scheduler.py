"""Prefill scheduling: requests go to the least-loaded instance; each instance packs its queue
into batches of at most a token budget, chunking prompts longer than what is left. The order is
a policy: FCFS (the default), or shortest remaining prompt first, which lowers mean TTFT when
prompt lengths are mixed at the price of making long prompts wait.

A request's prompt may be partly served by the caching pool: prefill then starts at the
first uncached token, but attention still spans the cached context.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field

from cloudmatrix.errors import CloudMatrixError

POLICIES = ("fcfs", "shortest")


@dataclass
class PrefillBatch:
    requests: list[int] = field(default_factory=list)  # requests with a chunk in this batch
    finishing: list[int] = field(default_factory=list)  # requests whose last chunk this is
    tokens: int = 0  # tokens computed
    context_sum: float = 0.0  # sum over computed tokens of the context each attends to (causal)
    cached_tokens: int = 0  # tokens read from the caching pool for the first chunks
    starts: list[int] = field(default_factory=list)  # per request in `requests`: first prompt token computed
    ends: list[int] = field(default_factory=list)  # and one past the last (the engine runs exactly these)


class PrefillQueue:
    """The queue of one prefill instance, ordered by `policy`."""

    def __init__(self, token_budget: int, policy: str = "fcfs"):
        if policy not in POLICIES:
            raise CloudMatrixError(f"unknown prefill policy {policy!r}; use one of {', '.join(POLICIES)}")
        self.token_budget = int(token_budget)
        self.policy = policy
        # items are [request, next token, prompt length, cached tokens]; "shortest" keeps a heap of
        # (remaining tokens, arrival order, item) so ties stay FCFS
        self._fifo: deque[list[int]] = deque()
        self._heap: list[tuple[int, int, list[int]]] = []
        self._order = itertools.count()
        self.queued_tokens = 0
        self.busy = False

    def __len__(self) -> int:
        return len(self._fifo) + len(self._heap)

    def enqueue(self, request: int, prompt_len: int, cached: int) -> None:
        item = [request, cached, prompt_len, cached]
        if self.policy == "fcfs":
            self._fifo.append(item)
        else:
            heapq.heappush(self._heap, (prompt_len - cached, next(self._order), item))
        self.queued_tokens += prompt_len - cached

    def _head(self) -> list[int]:
        return self._fifo[0] if self.policy == "fcfs" else self._heap[0][2]

    def _pop(self) -> None:
        if self.policy == "fcfs":
            self._fifo.popleft()
        else:
            heapq.heappop(self._heap)

    def remove(self, request: int) -> bool:
        """Take a request out of the queue (an abort); False if it is not queued."""
        for i, item in enumerate(self._fifo):
            if item[0] == request:
                del self._fifo[i]
                self.queued_tokens -= item[2] - item[1]
                return True
        for i, (_, _, item) in enumerate(self._heap):
            if item[0] == request:
                self._heap.pop(i)
                heapq.heapify(self._heap)
                self.queued_tokens -= item[2] - item[1]
                return True
        return False

    def next_batch(
        self, budget: int | None = None, *, chunked: bool = True, new_requests: int | None = None
    ) -> PrefillBatch | None:
        """The next batch of at most `budget` tokens (default: the queue's token budget). Without
        `chunked` only whole prompts are taken, in order, while they fit (None if the first does not);
        with `new_requests`, at most that many prompts not yet begun (a prompt in progress always goes on)."""
        if not len(self):
            return None
        b = PrefillBatch()
        left = self.token_budget if budget is None else int(budget)
        fresh = 0
        while len(self) and left > 0:
            item = self._head()
            request, start, length, cached = item
            if not chunked and length - start > left:
                break  # the head waits for a step with room for all of it; later prompts do not jump it
            if start == cached:
                if new_requests is not None and fresh >= new_requests:
                    break  # no room for another running request
                fresh += 1
            end = min(length, start + left)
            n = end - start
            b.requests.append(request)
            b.starts.append(start)
            b.ends.append(end)
            b.tokens += n
            # causal attention: token at position p attends to p+1 tokens
            b.context_sum += (end * (end + 1) - start * (start + 1)) / 2
            if start == cached:
                b.cached_tokens += cached
            left -= n
            self.queued_tokens -= n
            if end == length:
                self._pop()
                b.finishing.append(request)
            else:
                item[1] = end  # chunked: the rest waits for the next batch
                if self.policy == "shortest":  # re-key it by the work it has left
                    _, order, _ = self._heap[0]
                    heapq.heapreplace(self._heap, (length - end, order, item))
        return b if b.requests else None


class PrefillScheduler:
    """A pool of prefill instances; arrivals go to the instance with the least queued work."""

    def __init__(self, instances: int, token_budget: int, policy: str = "fcfs"):
        self.queues = [PrefillQueue(token_budget, policy) for _ in range(instances)]

    def assign(self, request: int, prompt_len: int, cached: int) -> int:
        # least queued work first; among equals an idle instance, so a lone request starts at once
        best, i = None, 0
        for k, q in enumerate(self.queues):
            load = (q.queued_tokens, q.busy)
            if best is None or load < best:
                best, i = load, k
        self.queues[i].enqueue(request, prompt_len, cached)
        return i
