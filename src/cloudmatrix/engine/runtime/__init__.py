"""The engine's runtime: LLMEngine over the shared control plane (see engine.py)."""

from cloudmatrix.engine.runtime.engine import Completion, LLMEngine
from cloudmatrix.engine.runtime.params import EngineConfig, EngineStats, RequestOutput, SamplingParams

__all__ = ["Completion", "EngineConfig", "EngineStats", "LLMEngine", "RequestOutput", "SamplingParams"]
