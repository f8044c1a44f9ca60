"""Disaggregated serving as separate processes: prefill workers, decode workers (an EP group in lockstep),
a caching pool of latent KV blocks in shared host memory, weights loaded once into shared memory."""

from cloudmatrix.engine.disagg.engine import DisaggConfig, DisaggregatedEngine

__all__ = ["DisaggConfig", "DisaggregatedEngine"]
