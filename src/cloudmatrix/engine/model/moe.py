"""DeepSeekMoE: a sigmoid router with group-limited top-k, routed experts behind a backend, shared experts.

Routing (same arithmetic as DeepSeek-V3 and transformers):
1. scores = sigmoid(x W_r^T), in float32;
2. selection uses scores + e_score_correction_bias (the load-balancing bias never weights outputs);
3. experts are split into n_group groups, a group's score is the sum of its top-2 biased scores,
   only the topk_group best groups stay eligible;
4. the top-k eligible experts are picked; their *unbiased* scores are normalised to sum to 1
   (norm_topk_prob) and multiplied by routed_scaling_factor.

The routed experts then run through `self.experts`, any callable with the backend interface of
`cloudmatrix.engine.model.experts` (local, expert-parallel, INT8); shared experts are added here.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from cloudmatrix.engine.model.config import ModelConfig
from cloudmatrix.engine.model.experts import ExpertWeights, LocalExperts
from cloudmatrix.engine.model.mlp import MLP


class ExpertsBackend(Protocol):
    def __call__(self, hidden: torch.Tensor, topk_ids: torch.Tensor, topk_weights: torch.Tensor) -> torch.Tensor: ...


class Router(nn.Module):
    """The `mlp.gate` of a DeepSeek-V3 checkpoint: weight [E, H] and e_score_correction_bias [E]."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        E = config.n_routed_experts
        self.top_k = config.num_experts_per_tok
        self.n_group = config.n_group
        self.topk_group = config.topk_group
        self.norm_topk_prob = config.norm_topk_prob
        self.routed_scaling_factor = config.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(E, config.hidden_size))
        self.register_buffer("e_score_correction_bias", torch.zeros(E))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """topk_ids [T, k] int64, topk_weights [T, k] float32 for hidden x [T, H]."""
        scores = F.linear(x.float(), self.weight.float()).sigmoid()
        biased = scores + self.e_score_correction_bias.float()
        T, E = biased.shape
        if self.n_group > 1:
            grouped = biased.view(T, self.n_group, E // self.n_group)
            group_scores = grouped.topk(min(2, E // self.n_group), dim=-1)[0].sum(dim=-1)
            keep = group_scores.topk(self.topk_group, dim=-1, sorted=False)[1]
            group_mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, keep, True)
            biased = grouped.masked_fill(~group_mask[:, :, None], float("-inf")).view(T, E)
        topk_ids = biased.topk(self.top_k, dim=-1, sorted=False)[1]
        topk_weights = scores.gather(1, topk_ids)
        if self.norm_topk_prob:
            topk_weights = topk_weights / (topk_weights.sum(dim=-1, keepdim=True) + 1e-20)
        return topk_ids, topk_weights * self.routed_scaling_factor


class MoE(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        E, H, I = config.n_routed_experts, config.hidden_size, config.moe_intermediate_size
        self.gate = Router(config)
        # The backend is replaceable: assign any ExpertsBackend (expert-parallel, INT8) to `self.experts`.
        self.experts: ExpertsBackend = LocalExperts(
            ExpertWeights(torch.empty(E, I, H), torch.empty(E, I, H), torch.empty(E, H, I))
        )
        self.shared_experts = MLP(H, I * config.n_shared_experts) if config.n_shared_experts else None

    def __setattr__(self, name: str, value: object) -> None:
        # `experts` may be any callable backend, not only an nn.Module (which torch would insist on).
        if name == "experts":
            self._modules.pop("experts", None)
            self.__dict__.pop("experts", None)
            if not isinstance(value, nn.Module):
                object.__setattr__(self, name, value)
                return
        super().__setattr__(name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        topk_ids, topk_weights = self.gate(x)
        out = self.experts(x, topk_ids, topk_weights)
        if self.shared_experts is not None:
            out = out + self.shared_experts(x)
        return out
