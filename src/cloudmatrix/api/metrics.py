"""Prometheus metrics for /metrics, named like vLLM's so that existing dashboards need one prefix change.

vLLM's `vllm:time_to_first_token_seconds` is `cloudmatrix:time_to_first_token_seconds` here, and so on
for TPOT/ITL, E2E, running/waiting requests, KV usage, prefix-cache queries/hits and token counters.
Each server owns its registry (two servers in one process, as in tests, do not collide).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

P = "cloudmatrix:"
# Buckets from vLLM's (seconds): a CPU engine sits at the slow end of them.
_TTFT = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0)
_ITL = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_E2E = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0)


class ServerMetrics:
    def __init__(self, model_name: str):
        self.registry = CollectorRegistry()
        r, labels = self.registry, {"model_name": model_name}

        def hist(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(P + name, doc, labelnames=["model_name"], buckets=buckets, registry=r).labels(**labels)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(P + name, doc, labelnames=["model_name"], registry=r).labels(**labels)

        def counter(name: str, doc: str) -> Counter:
            return Counter(P + name, doc, labelnames=["model_name"], registry=r).labels(**labels)

        self.ttft = hist("time_to_first_token_seconds", "Time to first token (arrival to first token).", _TTFT)
        self.itl = hist("inter_token_latency_seconds", "Time between consecutive output tokens.", _ITL)
        self.tpot = hist(
            "request_time_per_output_token_seconds", "Per request: (E2E - TTFT) / (output tokens - 1).", _ITL
        )
        self.e2e = hist("e2e_request_latency_seconds", "Arrival to last token, per finished request.", _E2E)
        self.running = gauge("num_requests_running", "Requests in the running batch.")
        self.waiting = gauge("num_requests_waiting", "Requests waiting to be scheduled.")
        self.kv_usage = gauge("kv_cache_usage_perc", "Fraction of KV cache blocks in use (0-1).")
        self.prefix_queries = counter("prefix_cache_queries", "Prompt tokens looked up in the prefix cache.")
        self.prefix_hits = counter("prefix_cache_hits", "Prompt tokens found in the prefix cache.")
        self.prompt_tokens = counter("prompt_tokens", "Prompt tokens processed.")
        self.generation_tokens = counter("generation_tokens", "Output tokens generated.")
        self._success = Counter(
            P + "request_success", "Finished requests by reason.", labelnames=["model_name", "finished_reason"],
            registry=r,
        )  # fmt: skip
        self._model = model_name
        self.aborted = counter("request_aborted", "Requests aborted by the server (client gone, timeout).")
        self.rejected = counter("request_rejected_queue_full", "Requests refused with 429 (queue full).")
        self._seen: dict[str, float] = {}

    def on_finished(self, out: Any, arrival: float, first_token: float | None, now: float) -> None:
        self._success.labels(model_name=self._model, finished_reason=out.finish_reason or "unknown").inc()
        self.e2e.observe(now - arrival)
        if first_token is not None and out.output_tokens > 1:
            self.tpot.observe((now - first_token) / (out.output_tokens - 1))

    def set_engine_stats(self, stats: Any) -> None:
        """Gauges from the engine's stats; its cumulative totals become counter increments."""
        self.running.set(stats.running)
        self.waiting.set(stats.waiting)
        self.kv_usage.set(stats.kv_blocks_used / stats.kv_blocks_total if stats.kv_blocks_total else 0.0)
        for name, counter in (
            ("prefix_queries", self.prefix_queries),
            ("prefix_hits", self.prefix_hits),
            ("tokens_in", self.prompt_tokens),
            ("tokens_out", self.generation_tokens),
        ):
            total = float(getattr(stats, name))
            delta = total - self._seen.get(name, 0.0)
            if delta > 0:
                counter.inc(delta)
            self._seen[name] = total

    def render(self) -> bytes:
        return generate_latest(self.registry)
