"""Prefill scheduling: requests go to the least-loaded instance; each instance packs its queue
FCFS into batches of at most a token budget, chunking prompts longer than what is left.

A request's prompt may be partly served by the caching pool: prefill then starts at the
first uncached token, but attention still spans the cached context.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class PrefillBatch:
    requests: list[int] = field(default_factory=list)  # requests with a chunk in this batch
    finishing: list[int] = field(default_factory=list)  # requests whose last chunk this is
    tokens: int = 0  # tokens computed
    context_sum: float = 0.0  # sum over computed tokens of the context each attends to (causal)
    cached_tokens: int = 0  # tokens read from the caching pool for the first chunks


class PrefillQueue:
    """The queue of one prefill instance."""

    def __init__(self, token_budget: int):
        self.token_budget = int(token_budget)
        self.queue: deque[list[int]] = deque()  # [request, next token, prompt length, cached tokens]
        self.queued_tokens = 0
        self.busy = False

    def enqueue(self, request: int, prompt_len: int, cached: int) -> None:
        self.queue.append([request, cached, prompt_len, cached])
        self.queued_tokens += prompt_len - cached

    def next_batch(self) -> PrefillBatch | None:
        if not self.queue:
            return None
        b = PrefillBatch()
        left = self.token_budget
        while self.queue and left > 0:
            item = self.queue[0]
            request, start, length, cached = item
            end = min(length, start + left)
            n = end - start
            b.requests.append(request)
            b.tokens += n
            # causal attention: token at position p attends to p+1 tokens
            b.context_sum += (end * (end + 1) - start * (start + 1)) / 2
            if start == cached:
                b.cached_tokens += cached
            left -= n
            self.queued_tokens -= n
            if end == length:
                self.queue.popleft()
                b.finishing.append(request)
            else:
                item[1] = end  # chunked: the rest waits for the next batch
        return b


class PrefillScheduler:
    """A pool of prefill instances; arrivals go to the instance with the least queued work."""

    def __init__(self, instances: int, token_budget: int):
        self.queues = [PrefillQueue(token_budget) for _ in range(instances)]

    def assign(self, request: int, prompt_len: int, cached: int) -> int:
        # least queued work first; among equals an idle instance, so a lone request starts at once
        best, i = None, 0
        for k, q in enumerate(self.queues):
            load = (q.queued_tokens, q.busy)
            if best is None or load < best:
                best, i = load, k
        self.queues[i].enqueue(request, prompt_len, cached)
        return i
