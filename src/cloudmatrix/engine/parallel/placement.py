"""Expert placement: which logical expert each physical slot on each EP rank holds.

A *slot* is one expert's weights resident on one rank. With redundancy (EPLB), the hottest
experts get extra slots on other ranks, and the tokens routed to a replicated expert are spread
over its replicas deterministically by token index, so every run with the same inputs moves the
same bytes to the same ranks.

Global slot ids run rank by rank: rank 0's slots first, then rank 1's, and so on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from cloudmatrix.errors import CloudMatrixError


@dataclass(frozen=True)
class ExpertPlacement:
    """Logical experts -> physical slots over `num_ranks` ranks.

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
                "an expert placement needs at least one expert and one rank; "
                f"got {self.num_experts} experts over {len(self.rank_experts)} ranks"
            )
        replicas: list[list[int]] = [[] for _ in range(self.num_experts)]
        slot_expert, slot_rank, slot_local = [], [], []
        for r, experts in enumerate(self.rank_experts):
            if len(set(experts)) != len(experts):
                raise CloudMatrixError(
                    f"rank {r} holds the same expert twice ({list(experts)}); "
                    "put an expert's replicas on different ranks"
                )
            for j, e in enumerate(experts):
                if not 0 <= e < self.num_experts:
                    raise CloudMatrixError(
                        f"rank {r} slot {j} names expert {e}, outside 0..{self.num_experts - 1}; "
                        "fix the placement or the expert count"
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
    def build(
        cls,
        num_experts: int,
        num_ranks: int,
        num_redundant: int = 0,
        expert_load: Sequence[float] | None = None,
    ) -> ExpertPlacement:
        """Balanced placement of `num_experts` + `num_redundant` slots over `num_ranks` ranks.

        Replicas go to the experts with the highest load per replica (EPLB's rule; with no load given,
        all experts weigh the same and ties go to the lowest id). Slots are then assigned heaviest first
        to the least-loaded rank that has room and does not already hold that expert. Ranks get
        ceil or floor of (experts + redundant) / ranks slots.
        """
        if num_experts <= 0 or num_ranks <= 0 or num_redundant < 0:
            raise CloudMatrixError(
                f"placement needs experts > 0, ranks > 0 and redundant >= 0; "
                f"got {num_experts}, {num_ranks}, {num_redundant}"
            )
        total = num_experts + num_redundant
        if total < num_ranks:
            raise CloudMatrixError(
                f"{total} expert slots cannot cover {num_ranks} ranks (each rank needs at least one); "
                "add redundant experts or use fewer EP ranks"
            )
        load = [1.0] * num_experts if expert_load is None else [float(x) for x in expert_load]
        if len(load) != num_experts or any(x < 0 for x in load):
            raise CloudMatrixError(
                f"expert_load needs {num_experts} non-negative numbers, got {len(load)}; "
                "pass one load figure (e.g. routed tokens) per logical expert"
            )
        count = [1] * num_experts
        for _ in range(num_redundant):
            e = max(range(num_experts), key=lambda i: (load[i] / count[i], -i))
            if count[e] >= num_ranks:
                raise CloudMatrixError(
                    f"expert {e} would need {count[e] + 1} replicas but there are only {num_ranks} ranks; "
                    "use fewer redundant experts or more ranks"
                )
            count[e] += 1
        capacity = [total // num_ranks + (1 if r < total % num_ranks else 0) for r in range(num_ranks)]
        # Heaviest replica first (longest-processing-time greedy); ties by expert id for determinism.
        items = sorted(
            ((load[e] / count[e], e) for e in range(num_experts) for _ in range(count[e])),
            key=lambda t: (-t[0], t[1]),
        )
        held: list[list[int]] = [[] for _ in range(num_ranks)]
        rank_load = [0.0] * num_ranks
        for w, e in items:
            free = [r for r in range(num_ranks) if len(held[r]) < capacity[r] and e not in held[r]]
            if not free:
                raise CloudMatrixError(
                    f"cannot place a replica of expert {e} without doubling it on a rank; "
                    "use fewer redundant experts"
                )
            r = min(free, key=lambda r: (rank_load[r], len(held[r]), r))
            held[r].append(e)
            rank_load[r] += w
        return cls(num_experts, tuple(tuple(sorted(h)) for h in held))
