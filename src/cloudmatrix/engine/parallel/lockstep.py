"""Keep an expert-parallel group in lockstep: every rank takes part in every MoE all-to-all of a step.

Attention is data-parallel (each rank serves its own sequences) but dispatch and combine are
collectives, so a step's MoE calls must line up on every rank. Each step the ranks agree on a plan
(one all_gather of a few integers): every rank says which *passes* it wants to run, and the plan is
their merge. A rank runs its own passes for real and an empty pass (T = 0 tokens through the same
MoE layers, hence the same collectives) for every pass of the plan it has no work for. A rank
whose sequences ended, or which never had any, therefore keeps serving the others' tokens instead
of leaving them blocked in an all-to-all; when no rank has work the plan is empty and nobody calls
a collective. `done` lets a loop end once every rank is done (one rank alone never ends the group).

Passes: MAIN (the decoder layers), MAIN_MICROBATCHED (the same, as two pipelined microbatches,
see microbatch.py) and mtp(k) (MTP module k). A rank's passes form rounds in that order (a round
ends when the next pass is not later in the order); the plan's round i is the union of every
rank's round i, so any rank's sequence of passes fits the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from cloudmatrix.engine.model.moe import MoE
from cloudmatrix.errors import CloudMatrixError

MAIN = 1
MAIN_MICROBATCHED = 2
_MTP0 = 3
MAX_PASSES = 8  # per rank and step


def mtp(depth: int) -> int:
    """The pass code of MTP module `depth`."""
    return _MTP0 + depth


def _rounds(passes: Sequence[int]) -> list[list[int]]:
    rounds: list[list[int]] = []
    for p in passes:
        if not rounds or p <= rounds[-1][-1]:
            rounds.append([])
        rounds[-1].append(p)
    return rounds


@dataclass(frozen=True)
class StepPlan:
    """The group's passes this step, each marked with whether this rank brings tokens to it."""

    passes: tuple[tuple[int, bool], ...]
    all_done: bool  # every rank said done (and nobody has a pass)

    @property
    def empty(self) -> bool:
        return not self.passes


class StepSync:
    """Lockstep for one EP group over `model` (its MoE layers use ExpertParallelExperts on `group`)."""

    def __init__(self, model: torch.nn.Module, group: dist.ProcessGroup | None = None):
        if not dist.is_initialized():
            raise CloudMatrixError("StepSync needs torch.distributed initialised (one process group per EP group)")
        self.model = model
        self.group = group
        self.world = dist.get_world_size(group)
        self.steps = 0
        self.idle_passes = 0  # empty passes this rank ran for others
        self.real_passes = 0

    def agree(self, passes: Sequence[int], done: bool = False) -> StepPlan:
        """Collective: this rank's passes for the step -> the group's plan (the same on every rank)."""
        if len(passes) > MAX_PASSES:
            raise CloudMatrixError(f"a step may hold at most {MAX_PASSES} passes per rank, got {len(passes)}")
        vec = torch.zeros(MAX_PASSES + 1, dtype=torch.long)
        vec[0] = int(done)
        vec[1 : 1 + len(passes)] = torch.tensor(list(passes), dtype=torch.long)
        gathered = [torch.empty_like(vec) for _ in range(self.world)]
        dist.all_gather(gathered, vec, group=self.group)
        per_rank = [[int(c) for c in g[1:].tolist() if c] for g in gathered]
        all_done = all(int(g[0]) for g in gathered) and not any(per_rank)
        plan_rounds: list[list[int]] = []
        for rounds in map(_rounds, per_rank):
            for i, r in enumerate(rounds):
                if i == len(plan_rounds):
                    plan_rounds.append([])
                plan_rounds[i] = sorted(set(plan_rounds[i]) | set(r))
        mine = _rounds(list(passes))
        marked = []
        for i, r in enumerate(plan_rounds):
            own = set(mine[i]) if i < len(mine) else set()
            marked += [(p, p in own) for p in r]
        self.steps += 1
        return StepPlan(tuple(marked), all_done)

    def run(self, plan: StepPlan, real: Sequence) -> list:
        """Run the plan: this rank's passes are the callables in `real` (in order), the rest empty passes.

        Returns what the real callables returned, in order.
        """
        out, it = [], iter(real)
        for code, own in plan.passes:
            if own:
                out.append(next(it)())
                self.real_passes += 1
            else:
                self.idle(code)
                self.idle_passes += 1
        return out

    def idle(self, code: int) -> None:
        """An empty pass: T = 0 tokens through every MoE layer the pass `code` runs, in order."""
        from cloudmatrix.engine.parallel.microbatch import idle_microbatched_pass

        model = self.model
        if code == MAIN_MICROBATCHED:
            idle_microbatched_pass(model)
            return
        if code == MAIN:
            layers = list(model.layers)
        elif code >= _MTP0 and code - _MTP0 < len(model.mtp):
            layers = [model.mtp[code - _MTP0]]
        else:
            raise CloudMatrixError(f"unknown pass code {code}; use MAIN, MAIN_MICROBATCHED or mtp(depth)")
        empty = torch.empty(0, model.config.hidden_size, dtype=model.dtype, device=model.embed_tokens.weight.device)
        for layer in layers:
            if isinstance(layer.mlp, MoE):
                layer.mlp(empty)
