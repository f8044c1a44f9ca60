"""Step costs for the simulator: the cost model (`perf`) called with what a step really holds.

The busiest die sets a step's pace, so a decode step is costed at the busiest die's sequences
and KV (the scheduler reports them); its mean context is rounded to 16 tokens and prefill shapes to 64 tokens so that
repeated shapes are memoised (each unique shape is a full `perf` call). Expert load
imbalance comes from the EPLB placement and the tokens of that very step.
"""

from __future__ import annotations

import math
from pathlib import Path

from cloudmatrix.perf import Deployment, decode_step, prefill_step
from cloudmatrix.perf.layers import DieContext, dispatch_bytes_per_copy
from cloudmatrix.perf.memory import check_fit, kv_capacity_tokens_per_die, memory_per_die
from cloudmatrix.perf.mixed import mixed_step
from cloudmatrix.serving.eplb import ExpertPlacement, LayeredPlacement, build_placement, popularity
from cloudmatrix.sim.scenario import ExpertsSpec
from cloudmatrix.specs.hardware import System
from cloudmatrix.specs.model import ModelSpec

_CTX_ROUND = 16
# the host dispatch a mixed step pays: a batch holding a context request runs as a prefill step does (eager in
# TensorRT-LLM: backends/trtllm.toml [phases]); the profiles have no phase of their own for it
MIXED_PHASE = "prefill"
_PREFILL_ROUND = 64
# ops of a prefill step that work on what the EP group's dies receive (the instance's mean load),
# as perf names them; every other op runs on the die's own tokens
_EXPERT_SIDE_OPS = frozenset({"routed_experts", "shared_experts", "shared_expert_dies", "token_permute"})


def _expert_share(b) -> float:
    """Share of a step's serial time spent in the expert GEMMs (receive side)."""
    expert = sum(r.time for r in b.rows if r.name in _EXPERT_SIDE_OPS)
    return expert / b.serial_time if b.serial_time > 0 else 0.0


def _paced(step, busiest: int, mean: int) -> float:
    """A step whose busiest rank holds `busiest` prompt tokens per die and the instance `mean`: the rank's own ops
    at `busiest`, the expert GEMMs (the receive side) at `mean`; `step(tokens)` costs the step at that many."""
    at_busiest = step(busiest)
    if busiest == mean:
        return at_busiest.step_time
    at_mean = step(mean)
    return at_busiest.step_time * (1 - _expert_share(at_busiest)) + at_mean.step_time * _expert_share(at_mean)


class PoolCosts:
    """Memoised step costs of one pool's instance."""

    def __init__(self, model: ModelSpec, system: System, dep: Deployment, experts: ExpertsSpec, base_dir: str = "."):
        self.model, self.system, self.dep = model, system, dep
        self.placement: ExpertPlacement | LayeredPlacement | None = None
        if model.is_moe and dep.ep_degree > 1:
            pop = popularity(
                experts.popularity,
                model.routed_experts,
                s=experts.zipf_s,
                path=None if experts.path is None else str(Path(base_dir) / experts.path),  # absolute paths stay
                seed=experts.seed,
            )
            placed_from = None  # the statistics a stale placement was computed from
            if experts.placement_path is not None:
                placed_from = popularity(
                    "file", model.routed_experts, path=str(Path(base_dir) / experts.placement_path)
                )
            slots = dep.slots_per_routed_die(model)
            self.placement = build_placement(pop, dep.routed_dies, slots, experts.placement, computed_from=placed_from)
            # the cost model takes the imbalance and experts hit at each microbatch's tokens from the placement
            self.dep = dep.with_(expert_load=self.placement.expert_load(model.top_k))
        self._decode: dict[tuple[int, int], float] = {}
        self._prefill: dict[tuple[int, int, int], float] = {}
        self._mixed: dict[tuple, float] = {}
        self.disp_bytes = dispatch_bytes_per_copy(DieContext(model, system, dep)) if model.is_moe else 0.0

    def imbalance(self, tokens_per_die: float) -> float:
        if self.placement is None:
            return 1.0
        tokens = max(1, round(tokens_per_die * self.dep.dies))
        return max(1.0, self.placement.step_imbalance(tokens, self.model.top_k))

    def decode_time(self, per_die: float, mean_context: float) -> float:
        """A decode step whose busiest die holds `per_die` sequences of mean context `mean_context`.

        Under attention TP a die's share of its TP group's sequences may be a fraction (one sequence on a
        TP8 group is 1/8 per die: `DecodeInstance.busiest_die` reports it so); costing it as one per die
        would charge eight sequences' attention and expert reads."""
        ctx = max(1, round(mean_context / _CTX_ROUND)) * _CTX_ROUND
        key = (per_die, ctx)
        t = self._decode.get(key)
        if t is None:
            dep = self.dep.with_(imbalance=self.imbalance(per_die * (1 + self.dep.mtp_depth)))
            t = decode_step(self.model, self.system, dep, per_die, ctx, check_memory=False).step_time
            self._decode[key] = t
        return t

    def _prefill_shape(self, tokens: int, context_sum: float, longest: int | None) -> tuple[int, int, int]:
        """(busiest rank's tokens, mean tokens per die, effective prompt length) of a prefill batch, rounded."""
        dies = self.dep.dies
        mean = math.ceil(tokens / dies / _PREFILL_ROUND) * _PREFILL_ROUND
        busiest = mean
        if longest is not None:
            rank = math.ceil(min(longest, tokens) / self.dep.attn_tp / _PREFILL_ROUND) * _PREFILL_ROUND
            busiest = max(mean, rank)
        # the prompt length that gives the same attention work: tokens * (L + 1) / 2 = context_sum
        eff_len = max(1, round((2 * context_sum / tokens - 1) / _PREFILL_ROUND)) * _PREFILL_ROUND
        return busiest, mean, eff_len

    def prefill_time(self, tokens: int, context_sum: float, longest: int | None = None) -> float:
        """A batch of `tokens` computed tokens whose causal contexts sum to `context_sum`; `longest` is
        its longest prompt chunk (default: the batch spreads evenly over the dies).

        Attention is data-parallel: a prompt chunk runs on one DP rank (its attention-TP group), so
        the busiest rank holds max(mean, longest chunk / attn_tp) tokens and paces attention, the dense
        layers, the router and the sending side of dispatch/combine. The experts' GEMMs work on what
        the EP group receives, which is the instance's mean. A lone prompt on a 32-die instance
        therefore costs its attention on one die, not a 32nd of it.
        """
        key = busiest, mean, eff_len = self._prefill_shape(tokens, context_sum, longest)
        t = self._prefill.get(key)
        if t is None:
            # the step's expert imbalance follows the tokens the instance really routes
            dep = self.dep.with_(imbalance=self.imbalance(mean))
            m, s = self.model, self.system
            t = _paced(lambda at: prefill_step(m, s, dep, at, eff_len, check_memory=False), busiest, mean)
            self._prefill[key] = t
        return t

    def mixed_time(
        self, per_die: float, mean_context: float, tokens: int, context_sum: float, longest: int | None = None
    ) -> float:
        """One forward over a prefill batch (as `prefill_time` takes it) and a decode step whose busiest die holds
        `per_die` sequences of mean context `mean_context` (as `decode_time` takes it): TensorRT-LLM's and vLLM's
        mixed step (perf/mixed.py). The prompt tokens are placed as in `prefill_time` (the busiest rank holds the
        longest chunk; the experts work on the instance's mean), the decode batch as in `decode_time` (the
        busiest die's sequences, everywhere); the busiest rank is costed holding both, the bound the sum of the
        two steps had. Its expert imbalance is taken at the step's prompt and decode tokens together."""
        ctx = max(1, round(mean_context / _CTX_ROUND)) * _CTX_ROUND
        busiest, mean, eff_len = self._prefill_shape(tokens, context_sum, longest)
        key = (busiest, mean, eff_len, per_die, ctx)
        t = self._mixed.get(key)
        if t is None:
            dep = self.dep.with_(imbalance=self.imbalance(mean + per_die * (1 + self.dep.mtp_depth)))
            m, s, phase = self.model, self.system, MIXED_PHASE

            def step(at: int):
                return mixed_step(m, s, dep, at, eff_len, per_die, ctx, host_phase=phase, check_memory=False)

            t = _paced(step, busiest, mean)
            self._mixed[key] = t
        return t

    def kv_tokens_per_instance(self, max_tokens_in_flight_per_die: float) -> float:
        per_die = kv_capacity_tokens_per_die(
            self.model, self.system, self.dep, max_tokens_in_flight_per_die, self.disp_bytes
        )
        return per_die * self.dep.dies

    def check_prefill_fit(self, tokens_per_die: int, what: str) -> None:
        mem = memory_per_die(
            self.model, self.dep, tokens_per_die, tokens_per_die / self.dep.microbatches, self.disp_bytes
        )
        check_fit(mem, self.system, self.dep, what)
