"""Slot map: which logical expert each physical slot on each EP rank holds, and which replica a token uses.

A *slot* is one expert's weights resident on one rank. Which experts get redundant replicas and
where they go is the control plane's decision (cloudmatrix.serving.eplb, written once for the
simulator and the engine); this module turns such a placement into the lookup tables the EP
backend routes with. Tokens routed to a replicated expert are spread over its replicas
deterministically by token index, so the same inputs move the same bytes to the same ranks.

Global slot ids run rank by rank: rank 0's slots first, then rank 1's, and so on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.serving.eplb import ExpertPlacement as EplbPlacement
from cloudmatrix.serving.eplb import PlacementMode


@dataclass(frozen=True)
class SlotMap:
    """Logical experts -> physical slots over `num_ranks` ranks (an expert may have several replicas).

    rank_experts[r] lists the logical expert held by each local slot of rank r, in slot order.
    """

    num_experts: int
    rank_experts: tuple[tuple[int, ...], ...]
    # Derived lookup tables (filled in __post_init__).
    slot_expert: torch.Tensor = field(init=False, repr=False, compare=False)  # [S] logical expert
    slot_rank: torch.Tensor = field(init=False, repr=False, compare=False)  # [S] owning rank
    slot_local: torch.Tensor = field(init=False, repr=False, compare=False)  # [S] index on that rank
    replica_table: torch.Tensor = field(init=False, repr=False, compare=False)  # [E, Rmax] global slots
    replica_count: torch.Tensor = field(init=False, repr=False, compare=False)  # [E]

    def __post_init__(self) -> None:
        if self.num_experts <= 0 or not self.rank_experts:
            raise CloudMatrixError(
                "a slot map needs at least one expert and one rank; "
                f"got {self.num_experts} experts over {len(self.rank_experts)} ranks"
            )
        replicas: list[list[int]] = [[] for _ in range(self.num_experts)]
        slot_expert, slot_rank, slot_local = [], [], []
        for r, experts in enumerate(self.rank_experts):
            for j, e in enumerate(experts):
                if not 0 <= e < self.num_experts:
                    raise CloudMatrixError(
                        f"rank {r} slot {j} names expert {e}, outside 0..{self.num_experts - 1}; "
                        "fix the slot map or the expert count"
                    )
                replicas[e].append(len(slot_expert))
                slot_expert.append(e)
                slot_rank.append(r)
                slot_local.append(j)
        missing = [e for e, reps in enumerate(replicas) if not reps]
        if missing:
            raise CloudMatrixError(
                f"experts {missing[:8]}{'...' if len(missing) > 8 else ''} have no slot on any rank; "
                "every logical expert needs at least one replica"
            )
        rmax = max(len(reps) for reps in replicas)
        table = torch.full((self.num_experts, rmax), -1, dtype=torch.long)
        for e, reps in enumerate(replicas):
            table[e, : len(reps)] = torch.tensor(reps)
        set_ = object.__setattr__  # frozen dataclass: derived fields are set once here
        set_(self, "slot_expert", torch.tensor(slot_expert, dtype=torch.long))
        set_(self, "slot_rank", torch.tensor(slot_rank, dtype=torch.long))
        set_(self, "slot_local", torch.tensor(slot_local, dtype=torch.long))
        set_(self, "replica_table", table)
        set_(self, "replica_count", torch.tensor([len(r) for r in replicas], dtype=torch.long))

    @property
    def num_ranks(self) -> int:
        return len(self.rank_experts)

    @property
    def num_slots(self) -> int:
        return int(self.slot_expert.numel())

    def experts_on(self, rank: int) -> list[int]:
        """The logical expert of each local slot of `rank` (what its weights must hold, in order)."""
        return list(self.rank_experts[rank])

    def replicas_of(self, expert: int) -> list[int]:
        """Global slot ids holding `expert`."""
        n = int(self.replica_count[expert])
        return self.replica_table[expert, :n].tolist()

    def route(self, topk_ids: torch.Tensor, rank: int = 0) -> torch.Tensor:
        """Global slot for each (token, choice) of topk_ids [T, k] routed on `rank`.

        A token goes to replica (token index + rank) mod replica count of its expert: deterministic,
        and the same local token index on different ranks lands on different replicas.
        """
        ids = topk_ids.long().cpu()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_experts):
            raise CloudMatrixError(
                f"topk_ids must be logical expert ids in 0..{self.num_experts - 1}; "
                f"got values in {int(ids.min())}..{int(ids.max())}"
            )
        tok = torch.arange(ids.shape[0], dtype=torch.long)[:, None].expand_as(ids)
        pick = (tok + rank) % self.replica_count[ids]
        return self.replica_table[ids, pick]

    @classmethod
    def from_eplb(cls, placement: EplbPlacement) -> SlotMap:
        """The slot map of a control-plane placement (cloudmatrix.serving.eplb); empty slots are dropped."""
        rank_experts = tuple(tuple(int(e) for e in row if e >= 0) for row in placement.slots)
        return cls(placement.n_experts, rank_experts)

    @classmethod
    def build(
        cls,
        num_experts: int,
        num_ranks: int,
        slots_per_rank: int | None = None,
        popularity: Sequence[float] | None = None,
        mode: PlacementMode = "eplb",
    ) -> SlotMap:
        """Place `num_experts` over `num_ranks` ranks of `slots_per_rank` slots with the control plane's EPLB.

        slots_per_rank defaults to ceil(experts / ranks); the slots beyond one per expert hold replicas of
        the experts with the highest popularity per replica (uniform popularity when none is given: ties
        go to the lowest ids), packed heaviest first onto the least-loaded rank.
        """
        if num_experts < 1 or num_ranks < 1:
            raise CloudMatrixError(f"a slot map needs experts >= 1 and ranks >= 1; got {num_experts} and {num_ranks}")
        spr = slots_per_rank if slots_per_rank is not None else -(-num_experts // num_ranks)
        pop = np.full(num_experts, 1.0) if popularity is None else np.asarray(popularity, dtype=np.float64)
        if pop.shape != (num_experts,):
            raise CloudMatrixError(
                f"popularity needs {num_experts} numbers (one per routed expert), got shape {pop.shape}"
            )
        return cls.from_eplb(EplbPlacement.build(pop, num_ranks, spr, mode=mode))
