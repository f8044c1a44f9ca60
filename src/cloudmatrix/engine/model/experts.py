"""Routed experts: the weights and the one interface every experts backend follows.

The DeepSeekMoE layer computes routing itself (router scores, group-limited
top-k, normalised weights times the routed scaling factor), then hands the
tokens to an *experts backend*:

    backend(hidden [T, H], topk_ids [T, k] int64, topk_weights [T, k] float) -> [T, H]

which returns the weighted sum of the routed experts' outputs (shared experts
are added by the MoE layer, not here). `LocalExperts` runs every expert in
this process; `cloudmatrix.engine.parallel` provides a backend that shards the
experts over torch.distributed ranks (dispatch -> local experts -> combine).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class ExpertWeights:
    """SwiGLU weights of E routed experts, stacked (HF per-expert tensors, stacked on dim 0).

    gate: [E, I, H]  up: [E, I, H]  down: [E, H, I]
    """

    gate: torch.Tensor
    up: torch.Tensor
    down: torch.Tensor

    @property
    def num_experts(self) -> int:
        return self.gate.shape[0]

    def select(self, expert_ids: list[int]) -> ExpertWeights:
        """The weights of a subset of experts (e.g. the slots one EP rank holds)."""
        idx = torch.as_tensor(expert_ids, dtype=torch.long)
        return ExpertWeights(self.gate[idx], self.up[idx], self.down[idx])


def expert_forward(x: torch.Tensor, weights: ExpertWeights, e: int) -> torch.Tensor:
    """One SwiGLU expert on the tokens routed to it: down(silu(gate x) * up x)."""
    return F.linear(F.silu(F.linear(x, weights.gate[e])) * F.linear(x, weights.up[e]), weights.down[e])


class LocalExperts(torch.nn.Module):
    """All routed experts in this process: the reference backend.

    gate and up are kept in one [E, 2I, H] tensor (`weights.gate` / `weights.up` are views of it), so
    each expert runs two matmuls instead of three. Token-slots are sorted by expert and gathered once;
    each expert works on a contiguous slice and the weighted results are scattered back in one
    index_add, which keeps the per-expert Python work to a few ops (decode batches hit most experts).
    """

    def __init__(self, weights: ExpertWeights):
        super().__init__()
        # Buffers, so that .to(), state_dict() and load_state_dict() reach the expert weights.
        self.register_buffer("gate_up", torch.cat([weights.gate, weights.up], dim=1))
        self.register_buffer("down", weights.down.contiguous())

    @property
    def weights(self) -> ExpertWeights:
        """Views of the buffers (always current, also after .to() or load_state_dict(assign=True))."""
        inter = self.down.shape[2]
        return ExpertWeights(self.gate_up[:, :inter], self.gate_up[:, inter:], self.down)

    def forward(self, hidden: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor:
        k = topk_ids.shape[1]
        inter = self.down.shape[2]
        flat_ids = topk_ids.reshape(-1)
        # Sort token-slots by expert so each expert runs once on a contiguous group.
        order = torch.argsort(flat_ids, stable=True)
        counts = torch.bincount(flat_ids, minlength=self.gate_up.shape[0]).tolist()
        token_of_slot = order // k
        x = hidden[token_of_slot]
        y = torch.empty_like(x)
        start = 0
        for e, n in enumerate(counts):
            if n == 0:
                continue
            end = start + n
            h = F.linear(x[start:end], self.gate_up[e])
            torch.mm(F.silu(h[:, :inter]) * h[:, inter:], self.down[e].t(), out=y[start:end])
            start = end
        y *= topk_weights.reshape(-1)[order, None].to(y.dtype)
        return torch.zeros_like(hidden).index_add_(0, token_of_slot, y)
