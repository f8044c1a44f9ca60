"""Expert load statistics of one step: how many distinct experts a die's tokens hit, and how much busier
the busiest die of the EP group is than the mean (the straggler every dispatch/combine waits for).

Two sources:
- no placement given (`uniform_*`): every routed slot equally likely, closed forms;
- a placement (`ExpertLoad`): per-expert popularity and the share of each expert's tokens each die
  serves (serving/eplb.py builds it), from which both figures follow at any token count.

A token picks `top_k` distinct experts; expert e is among a token's top-k with probability q_e
(k x popularity, capped at 1). A slot holding a replica of e (of r_e replicas) receives a given
token with probability q_e / r_e, so after T tokens it holds at least one with probability
1 - (1 - q_e / r_e)^T: the standard expected-distinct count E (1 - (1 - k/E)^T) for uniform routing.
"""

from __future__ import annotations

import hashlib

import numpy as np

from cloudmatrix.errors import CloudMatrixError


def uniform_distinct_per_die(slots_per_die: float, total_slots: float, top_k: float, tokens: float) -> float:
    """Expected expert slots on one die that receive at least one of `tokens` tokens (uniform routing
    over `total_slots` slots, `top_k` slots per token)."""
    if tokens <= 0:
        return 0.0
    p = min(1.0, top_k / total_slots)
    return slots_per_die * (1.0 - (1.0 - p) ** tokens)


def inclusion_probs(p: np.ndarray, top_k: int) -> np.ndarray:
    """Probability that each expert is among a token's top_k: k*p capped at 1, the rest renormalised."""
    if top_k > np.count_nonzero(p):
        raise CloudMatrixError(f"top_k={top_k} exceeds the {np.count_nonzero(p)} experts with non-zero popularity.")
    q = top_k * p
    capped = np.zeros(p.size, dtype=bool)
    while (q > 1.0 + 1e-12).any():
        capped |= q >= 1.0
        free = ~capped
        q = np.where(capped, 1.0, p * (top_k - capped.sum()) / p[free].sum())
    return np.minimum(q, 1.0)


# Monte Carlo and distinct-expert results per (placement, routing, sampling) digest, shared by every
# ExpertLoad of the same placement: the planner and the simulator build one per pool or layout, and
# each would otherwise redo the same seeded draws (values are identical either way).
_STATS_BY_PLACEMENT: dict[bytes, tuple[dict[int, float], dict[int, float]]] = {}


def _placement_digest(popularity: np.ndarray, share: np.ndarray, top_k: int, samples: int, seed: int) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for a in (popularity, share):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(f"{top_k}/{samples}/{seed}".encode())
    return h.digest()


class ExpertLoad:
    """Load statistics of one placement of routed experts on `ranks` routed dies.

    popularity: (E,) share of token->expert assignments; share: (E, ranks) fraction of expert e's
    tokens die r serves (rows sum to 1); slot_q: per occupied slot, the probability that one token
    lands on it. `perfect` reports the idealised balance (imbalance exactly 1)."""

    def __init__(
        self,
        popularity: np.ndarray,
        share: np.ndarray,
        top_k: int,
        *,
        perfect: bool = False,
        samples: int = 256,
        seed: int = 0,
        points_per_octave: int = 4,
    ):
        self.popularity = np.asarray(popularity, dtype=np.float64)
        self.share = np.asarray(share, dtype=np.float64)
        self.top_k = int(top_k)
        self.perfect = perfect
        self.samples, self.seed, self.points_per_octave = samples, seed, points_per_octave
        self.q = inclusion_probs(self.popularity, self.top_k)
        # per (expert, die) pair with a replica: probability one token lands on that slot
        e, r = np.nonzero(self.share > 0)
        self._slot_q = self.q[e] * self.share[e, r]
        self._slot_rank = r
        key = _placement_digest(self.popularity, self.share, self.top_k, samples, seed)
        self._imb, self._distinct = _STATS_BY_PLACEMENT.setdefault(key, ({}, {}))

    @property
    def ranks(self) -> int:
        return self.share.shape[1]

    # ---- distinct experts
    def distinct_per_die(self, tokens: float) -> float:
        """Mean over dies of the expected slots that receive at least one of `tokens` tokens (the group's
        tokens of one microbatch)."""
        t = max(1, round(tokens))
        hit = self._distinct.get(t)
        if hit is None:
            hit = float(np.sum(1.0 - (1.0 - self._slot_q) ** t)) / self.ranks
            self._distinct[t] = hit
        return hit

    # ---- straggler
    def imbalance(self, tokens: float) -> float:
        """Expected max / mean die load for one microbatch of `tokens` tokens over the EP group, each routed
        to top_k experts: E[max over dies] / mean, interpolated in log tokens on a geometric grid (at most
        `points_per_octave` Monte Carlo estimates per doubling are ever computed)."""
        if self.perfect:
            return 1.0
        if tokens < 1:
            raise CloudMatrixError(f"expert load imbalance needs at least one token, got {tokens}")
        ppo = self.points_per_octave
        x = np.log2(tokens) * ppo
        lo, hi = int(np.floor(x)), int(np.ceil(x))
        t_lo, t_hi = max(1, round(2.0 ** (lo / ppo))), max(1, round(2.0 ** (hi / ppo)))
        v_lo = self.imbalance_at(t_lo)
        if t_hi == t_lo:
            return v_lo
        v_hi = self.imbalance_at(t_hi)
        w = (np.log2(tokens) - np.log2(t_lo)) / (np.log2(t_hi) - np.log2(t_lo))
        return float(v_lo + (v_hi - v_lo) * w)

    def imbalance_at(self, tokens: int) -> float:
        """Seeded Monte Carlo E[max]/mean at exactly `tokens` tokens: each expert's count is
        Binomial(tokens, q_e), split over its replicas by `share`."""
        hit = self._imb.get(tokens)
        if hit is not None:
            return hit
        rng = np.random.default_rng(self.seed)
        counts = rng.binomial(tokens, self.q, size=(self.samples, self.q.size)).astype(np.float64)
        loads = counts @ self.share
        mean = loads.sum(axis=1) / self.ranks
        ok = mean > 0
        val = float(np.mean(loads.max(axis=1)[ok] / mean[ok])) if ok.any() else 1.0
        val = max(1.0, val)
        self._imb[tokens] = val
        return val


def expert_load_for(model, dep, popularity: np.ndarray, slots: np.ndarray, *, perfect: bool = False) -> ExpertLoad:
    """An ExpertLoad from a placement's slot table: `slots` (routed dies, slots per die) of expert ids
    (-1 = empty); an expert's tokens split evenly over its replicas."""
    slots = np.asarray(slots)
    n = popularity.size
    replicas = np.bincount(slots[slots >= 0], minlength=n)
    share = np.zeros((n, slots.shape[0]))
    rk, sl = np.nonzero(slots >= 0)
    ex = slots[rk, sl]
    np.add.at(share, (ex, rk), 1.0 / replicas[ex])
    return ExpertLoad(popularity, share, model.top_k, perfect=perfect)


class LayeredExpertLoad:
    """Load statistics of a model whose MoE layers each have their own popularity and placement (a measured
    per-layer expert distribution: serving/eplb.py `LayeredPlacement`). Every layer's dispatch and combine
    waits for that layer's busiest die, and a step's time is the sum over its layers, so the step's straggler
    factor is the mean of the layers' (the expert time is affine in it); the same holds for the experts hit."""

    def __init__(self, layers: list[ExpertLoad]):
        if not layers:
            raise CloudMatrixError("a per-layer expert load needs at least one MoE layer.")
        self.layers = layers
        self._cache: dict[tuple[str, float], float] = {}  # the cost model asks the same token counts often

    @property
    def ranks(self) -> int:
        return self.layers[0].ranks

    def distinct_per_die(self, tokens: float) -> float:
        key = ("distinct", float(tokens))
        if key not in self._cache:
            self._cache[key] = float(np.mean([x.distinct_per_die(tokens) for x in self.layers]))
        return self._cache[key]

    def imbalance(self, tokens: float) -> float:
        key = ("imbalance", float(tokens))
        if key not in self._cache:
            self._cache[key] = float(np.mean([x.imbalance(tokens) for x in self.layers]))
        return self._cache[key]
