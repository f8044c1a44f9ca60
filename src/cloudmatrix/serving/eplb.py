"""Expert placement (EPLB): redundant replicas of hot experts, balanced onto EP ranks.

Popularity is each routed expert's share of token->expert assignments. A placement
puts `ranks x slots_per_rank` expert replicas on the ranks; an expert's tokens are
split evenly over its replicas. Two imbalance figures drive the cost model:

- static imbalance: max / mean of the *expected* per-rank load;
- step imbalance: the expected max / mean over one step of T tokens, where sampling
  noise makes small (decode) batches less balanced than large (prefill) ones.

Modes: "none" (one replica per expert, contiguous id ranges per rank, as a
default static layout), "eplb" (extra slots replicate the hottest experts, then
longest-processing-time-first packing), "perfect" (the idealised balance the paper
projects: both imbalances are exactly 1.0).

A popularity may be one vector for every MoE layer or one per layer (a measured expert
distribution, e.g. SGLang's `logical_count` dump); a per-layer one gets a placement per layer
(`LayeredPlacement`), as EPLB places each layer on its own. A placement may be computed from one
distribution and serve another (`build_placement(..., computed_from=)`): statistics recorded on other
traffic than the one served, the way a deployed placement goes stale.
"""

from __future__ import annotations

import csv
import heapq
import json
from pathlib import Path
from typing import Literal

import numpy as np

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf.expert_load import ExpertLoad, LayeredExpertLoad

PlacementMode = Literal["none", "eplb", "perfect"]
_MODES = ("none", "eplb", "perfect")


# ---- popularity -------------------------------------------------------------------------
def popularity(
    kind: str,
    n_experts: int,
    *,
    s: float = 1.0,
    path: str | Path | None = None,
    seed: int | None = None,
) -> np.ndarray:
    """Per-expert popularity, normalised to sum 1.

    kind: "uniform"; "zipf" (weight of the i-th hottest expert ∝ 1/i**s; with `seed`
    the hot experts get random ids, without it expert 0 is the hottest); "file"
    (weights read from `path`, CSV or JSON, see `read_popularity`: one row per MoE layer when the file
    holds per-layer counts).
    """
    if n_experts < 1:
        raise CloudMatrixError(f"n_experts must be >= 1, got {n_experts}.")
    if kind == "uniform":
        return np.full(n_experts, 1.0 / n_experts)
    if kind == "zipf":
        if not np.isfinite(s) or s < 0:
            raise CloudMatrixError(f"zipf parameter s must be a finite number >= 0, got {s}.")
        w = 1.0 / np.arange(1, n_experts + 1, dtype=np.float64) ** s
        if seed is not None:
            w = np.random.default_rng(seed).permutation(w)
        return w / w.sum()
    if kind == "file":
        if path is None:
            raise CloudMatrixError("popularity kind 'file' needs path= (a CSV or JSON of per-expert weights).")
        w = read_popularity(path)
        if w.shape[-1] != n_experts:
            raise CloudMatrixError(
                f"{path}: has {w.shape[-1]} expert weights{' per layer' if w.ndim == 2 else ''} but the model has "
                f"{n_experts} routed experts; "
                "give one weight per routed expert."
            )
        return w
    raise CloudMatrixError(f"unknown popularity kind {kind!r}; use 'uniform', 'zipf' or 'file'.")


def read_popularity(path: str | Path) -> np.ndarray:
    """Read per-expert weights (normalised to sum 1).

    CSV: one weight per row, or a header row with a `weight` column (an `expert`
    column, if present, must list 0..n-1 in order). JSON: a list of numbers, an
    object with a "weights" list, or SGLang's expert-distribution dump, an object whose
    "logical_count" is one list of per-expert token counts per layer (what
    `/eplb_save_expert_distribution` writes and `--init-expert-location` reads). Per-layer
    counts come back as a (MoE layers, experts) array, each row normalised; layers whose
    counts are all zero (the dense layers) are dropped.
    """
    p = Path(path)
    if not p.is_file():
        raise CloudMatrixError(f"expert popularity file {p} does not exist; check the path.")
    suffix = p.suffix.lower()
    if suffix == ".json":
        weights = _read_json_weights(p)
        if isinstance(weights, np.ndarray):  # per layer
            return weights
    elif suffix == ".csv":
        weights = _read_csv_weights(p)
    else:
        raise CloudMatrixError(f"{p}: expert popularity must be a .csv or .json file, not {suffix or 'no suffix'}.")
    return _check_weights(np.asarray(weights, dtype=np.float64), str(p))


def _read_json_weights(p: Path) -> list[float] | np.ndarray:
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise CloudMatrixError(f"{p}:{e.lineno}: invalid JSON ({e.msg}).") from None
    if isinstance(data, dict) and "logical_count" in data:
        return _per_layer_counts(data["logical_count"], p)
    if isinstance(data, dict):
        if "weights" not in data:
            raise CloudMatrixError(f'{p}: a JSON object must have a "weights" list; found keys {sorted(data)}.')
        data = data["weights"]
    if not isinstance(data, list) or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in data):
        raise CloudMatrixError(f"{p}: expected a JSON list of numbers (one weight per expert).")
    return [float(x) for x in data]


def _per_layer_counts(counts, p: Path) -> np.ndarray:
    """SGLang's `logical_count` (layers x experts token counts) -> (MoE layers, experts), rows summing to 1."""
    ok = isinstance(counts, list) and counts and all(isinstance(r, list) for r in counts)
    if not ok or len({len(r) for r in counts}) != 1:
        raise CloudMatrixError(f'{p}: "logical_count" must be a list of equally long per-layer lists of counts.')
    try:
        c = np.asarray(counts, dtype=np.float64)
    except (TypeError, ValueError):
        raise CloudMatrixError(f'{p}: "logical_count" holds something that is not a number.') from None
    c = c[np.any(c != 0, axis=1)]  # the dense layers count nothing
    if c.shape[0] == 0:
        raise CloudMatrixError(f'{p}: every layer of "logical_count" is all zeros; no expert was counted.')
    return np.stack([_check_weights(row, f"{p} MoE layer {i}") for i, row in enumerate(c)])


def _read_csv_weights(p: Path) -> list[float]:
    with p.open(newline="") as f:
        rows = [(i, r) for i, r in enumerate(csv.reader(f), start=1) if r and any(c.strip() for c in r)]
    if not rows:
        raise CloudMatrixError(f"{p}: is empty; give one weight per expert.")
    header = [c.strip().lower() for c in rows[0][1]]
    col, expert_col = 0, None
    if "weight" in header:
        col = header.index("weight")
        expert_col = header.index("expert") if "expert" in header else None
        rows = rows[1:]
    elif len(header) != 1:
        raise CloudMatrixError(f"{p}:1: several columns but no header; add a header row with a 'weight' column.")
    out: list[float] = []
    for k, (line, r) in enumerate(rows):
        try:
            out.append(float(r[col]))
            if expert_col is not None and int(r[expert_col]) != k:
                raise CloudMatrixError(
                    f"{p}:{line}: expert id {r[expert_col]} out of order; list experts 0..n-1 in order."
                )
        except (ValueError, IndexError):
            raise CloudMatrixError(f"{p}:{line}: cannot read a weight from {','.join(r)!r}.") from None
    return out


def _check_weights(w: np.ndarray, where: str) -> np.ndarray:
    if w.ndim != 1 or w.size == 0:
        raise CloudMatrixError(f"{where}: expert popularity must be a non-empty 1-D list of weights.")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        bad = int(np.flatnonzero(~np.isfinite(w) | (w < 0))[0])
        raise CloudMatrixError(f"{where}: weight of expert {bad} is {w[bad]}; weights must be finite and >= 0.")
    if w.sum() <= 0:
        raise CloudMatrixError(f"{where}: all expert weights are zero; at least one must be positive.")
    return w / w.sum()


# ---- placement --------------------------------------------------------------------------
class ExpertPlacement:
    """Replicas of routed experts on `ranks` EP ranks with `slots_per_rank` slots each.

    Attributes: `popularity` (E,), `replicas` (E,) replica count per expert,
    `slots` (ranks, slots_per_rank) expert id per slot (-1 = empty),
    `rank_load` (ranks,) expected share of assignments per rank (sums to 1).
    """

    def __init__(
        self,
        popularity: np.ndarray,
        replicas: np.ndarray,
        slots: np.ndarray,
        rank_load: np.ndarray,
        mode: PlacementMode,
    ) -> None:
        self.popularity = popularity
        self.replicas = replicas
        self.slots = slots
        self.rank_load = rank_load
        self.mode = mode
        self._loads: dict[tuple[int, int, int, int], ExpertLoad] = {}
        self._share: np.ndarray | None = None

    @property
    def ranks(self) -> int:
        return self.slots.shape[0]

    @property
    def slots_per_rank(self) -> int:
        return self.slots.shape[1]

    @property
    def n_experts(self) -> int:
        return self.popularity.size

    @property
    def redundant_slots(self) -> int:
        return self.slots.size - self.n_experts

    @classmethod
    def build(
        cls,
        popularity: np.ndarray,
        ranks: int,
        slots_per_rank: int,
        mode: PlacementMode = "eplb",
    ) -> ExpertPlacement:
        """Place the routed experts. `ranks` counts only ranks that take routed tokens:
        CloudMatrix-Infer prefill EP32 is (32, 9) with 32 redundant slots; decode EP320 is
        (288, 1), its 32 shared-expert ranks excluded."""
        if mode not in _MODES:
            raise CloudMatrixError(f"unknown placement mode {mode!r}; use one of {', '.join(_MODES)}.")
        p = _check_weights(np.asarray(popularity, dtype=np.float64).ravel(), "expert popularity")
        if ranks < 1 or slots_per_rank < 1:
            raise CloudMatrixError(
                f"EP placement needs ranks >= 1 and slots_per_rank >= 1, got {ranks} and {slots_per_rank}."
            )
        n = p.size
        if ranks * slots_per_rank < n:
            raise CloudMatrixError(
                f"{ranks} ranks x {slots_per_rank} slots = {ranks * slots_per_rank} slots cannot hold "
                f"{n} routed experts; add ranks or slots per rank (need ranks x slots >= {n})."
            )
        if mode == "eplb":
            replicas = _assign_replicas(p, ranks * slots_per_rank, ranks)
            slots = _pack_lpt(p, replicas, ranks, slots_per_rank)
        else:
            # "none", and "perfect" as a concrete layout behind its idealised figures.
            # Contiguous id ranges as even as possible (rank r gets ids n*r//R .. n*(r+1)//R - 1);
            # spare slots stay empty.
            replicas = np.ones(n, dtype=np.int64)
            slots = np.full((ranks, slots_per_rank), -1, dtype=np.int64)
            bounds = np.arange(ranks + 1) * n // ranks
            for r in range(ranks):
                slots[r, : bounds[r + 1] - bounds[r]] = np.arange(bounds[r], bounds[r + 1])
        return cls(p, replicas, slots, _rank_load(p, replicas, slots, mode), mode)

    @property
    def static_imbalance(self) -> float:
        """Max rank load / mean rank load of the expected loads (1.0 = balanced).

        The mean is over all ranks, so ranks left without experts count as idle
        capacity (256 experts on 288 single-slot ranks give 1.125 even when uniform).
        """
        return float(self.rank_load.max() * self.ranks)

    def expert_load(self, top_k: int, *, samples: int = 256, seed: int = 0, points_per_octave: int = 4) -> ExpertLoad:
        """This placement's load statistics (cloudmatrix.perf.expert_load), memoised per argument set:
        what the cost model reads at each microbatch's tokens."""
        key = (int(top_k), int(samples), int(seed), int(points_per_octave))
        load = self._loads.get(key)
        if load is None:
            load = ExpertLoad(
                self.popularity,
                self._expert_to_rank(),
                top_k,
                perfect=self.mode == "perfect",
                samples=samples,
                seed=seed,
                points_per_octave=points_per_octave,
            )
            self._loads[key] = load
        return load

    def expected_step_imbalance(self, tokens: int, top_k: int, *, samples: int = 256, seed: int = 0) -> float:
        """Expected max/mean rank load for one step of `tokens` tokens, each routed to `top_k` experts
        (seeded Monte Carlo in cloudmatrix.perf.expert_load; 1.0 for "perfect")."""
        if tokens < 1 or top_k < 1 or samples < 1:
            raise CloudMatrixError(
                f"step imbalance needs tokens, top_k and samples >= 1, got {tokens}, {top_k}, {samples}."
            )
        if self.mode == "perfect":
            return 1.0
        return self.expert_load(top_k, samples=samples, seed=seed).imbalance_at(int(tokens))

    def step_imbalance(
        self, tokens: int, top_k: int, *, samples: int = 256, seed: int = 0, points_per_octave: int = 4
    ) -> float:
        """`expected_step_imbalance` interpolated (linearly in log tokens) on a geometric grid."""
        if tokens < 1:
            raise CloudMatrixError(f"step imbalance needs tokens >= 1, got {tokens}.")
        if points_per_octave < 1:
            raise CloudMatrixError(f"points_per_octave must be >= 1, got {points_per_octave}.")
        load = self.expert_load(top_k, samples=samples, seed=seed, points_per_octave=points_per_octave)
        return load.imbalance(tokens)

    def serving(self, popularity: np.ndarray) -> ExpertPlacement:
        """The same replicas and slots serving traffic of another popularity (a placement computed from
        statistics of other traffic than the one it serves)."""
        p = _check_weights(np.asarray(popularity, dtype=np.float64).ravel(), "served expert popularity")
        if p.size != self.n_experts:
            raise CloudMatrixError(
                f"served popularity has {p.size} experts but the placement holds {self.n_experts}; "
                "both distributions must be of the same model."
            )
        return ExpertPlacement(
            p, self.replicas, self.slots, _rank_load(p, self.replicas, self.slots, self.mode), self.mode
        )

    def _expert_to_rank(self) -> np.ndarray:
        """(experts, ranks) matrix: the share of an expert's tokens each rank serves."""
        if self._share is not None:
            return self._share
        rk, sl = np.nonzero(self.slots >= 0)
        ex = self.slots[rk, sl]
        share = np.zeros((self.n_experts, self.ranks))
        np.add.at(share, (ex, rk), 1.0 / self.replicas[ex])
        self._share = share
        return share

    def summary(self) -> dict[str, object]:
        return {
            "mode": self.mode,
            "ranks": self.ranks,
            "slots_per_rank": self.slots_per_rank,
            "n_experts": self.n_experts,
            "redundant_slots": self.redundant_slots,
            "max_replicas": int(self.replicas.max()),
            "static_imbalance": self.static_imbalance,
        }


class LayeredPlacement:
    """One placement per MoE layer (a per-layer popularity): the interface of `ExpertPlacement` the cost
    model and the simulator use, each figure the mean over the layers (a step sums its layers, and each
    layer's dispatch / combine waits for that layer's busiest die)."""

    def __init__(self, layers: list[ExpertPlacement]):
        if not layers:
            raise CloudMatrixError("a per-layer placement needs at least one MoE layer.")
        self.layers = layers
        self.mode = layers[0].mode
        self._loads: dict[tuple[int, int, int, int], LayeredExpertLoad] = {}

    @property
    def ranks(self) -> int:
        return self.layers[0].ranks

    @property
    def static_imbalance(self) -> float:
        return float(np.mean([x.static_imbalance for x in self.layers]))

    def expert_load(
        self, top_k: int, *, samples: int = 256, seed: int = 0, points_per_octave: int = 4
    ) -> LayeredExpertLoad:
        key = (int(top_k), int(samples), int(seed), int(points_per_octave))
        if key not in self._loads:
            self._loads[key] = LayeredExpertLoad(
                [
                    x.expert_load(top_k, samples=samples, seed=seed, points_per_octave=points_per_octave)
                    for x in self.layers
                ]
            )
        return self._loads[key]

    def step_imbalance(
        self, tokens: int, top_k: int, *, samples: int = 256, seed: int = 0, points_per_octave: int = 4
    ) -> float:
        if tokens < 1:
            raise CloudMatrixError(f"step imbalance needs tokens >= 1, got {tokens}.")
        return self.expert_load(top_k, samples=samples, seed=seed, points_per_octave=points_per_octave).imbalance(
            tokens
        )


def build_placement(
    popularity: np.ndarray,
    ranks: int,
    slots_per_rank: int,
    mode: PlacementMode = "eplb",
    *,
    computed_from: np.ndarray | None = None,
) -> ExpertPlacement | LayeredPlacement:
    """The placement serving traffic of `popularity` (one vector, or one row per MoE layer) on `ranks` x
    `slots_per_rank` slots, computed from `computed_from` where given (statistics of other traffic: a stale
    placement), else from the traffic's own. A single vector on either side applies to every layer of the other."""
    serve = np.asarray(popularity, dtype=np.float64)
    place = serve if computed_from is None else np.asarray(computed_from, dtype=np.float64)
    if place.ndim == 1 and serve.ndim == 1:
        pl = ExpertPlacement.build(place, ranks, slots_per_rank, mode)
        return pl if computed_from is None else pl.serving(serve)
    if place.ndim == 2 and serve.ndim == 2 and place.shape[0] != serve.shape[0]:
        raise CloudMatrixError(
            f"the placement's statistics have {place.shape[0]} MoE layers and the served traffic's "
            f"{serve.shape[0]}; give per-layer files of the same model."
        )
    if place.ndim == 1:  # one placement for every layer: build it once
        one = ExpertPlacement.build(place, ranks, slots_per_rank, mode)
        return LayeredPlacement([one.serving(s) for s in serve])
    layers = [ExpertPlacement.build(p, ranks, slots_per_rank, mode) for p in place]
    if computed_from is None:
        return LayeredPlacement(layers)
    return LayeredPlacement([pl.serving(serve if serve.ndim == 1 else serve[i]) for i, pl in enumerate(layers)])


def _assign_replicas(p: np.ndarray, n_slots: int, ranks: int) -> np.ndarray:
    """Give each extra slot to the expert with the highest load per replica.

    An expert gets at most one replica per rank (two on one rank balance nothing).
    """
    replicas = np.ones(p.size, dtype=np.int64)
    extra = n_slots - p.size
    heap = [(-float(w), i) for i, w in enumerate(p)]
    heapq.heapify(heap)
    while extra > 0 and heap:
        _, i = heapq.heappop(heap)
        if replicas[i] >= ranks:
            continue
        replicas[i] += 1
        extra -= 1
        heapq.heappush(heap, (-float(p[i]) / replicas[i], i))
    return replicas


def _pack_lpt(p: np.ndarray, replicas: np.ndarray, ranks: int, slots_per_rank: int) -> np.ndarray:
    """Longest-processing-time-first packing of replicas onto ranks with slot limits."""
    expert = np.repeat(np.arange(p.size), replicas)
    load = (p / replicas)[expert]
    order = np.argsort(-load, kind="stable")
    rank_load = np.zeros(ranks)
    used = np.zeros(ranks, dtype=np.int64)
    slots = np.full((ranks, slots_per_rank), -1, dtype=np.int64)
    has = np.zeros((p.size, ranks), dtype=bool)
    inf = np.inf
    for k in order:
        e = expert[k]
        cand = np.where((used < slots_per_rank) & ~has[e], rank_load, inf)
        r = int(np.argmin(cand))
        if cand[r] == inf:  # every rank with room already holds e: co-locate
            r = int(np.argmin(np.where(used < slots_per_rank, rank_load, inf)))
        slots[r, used[r]] = e
        used[r] += 1
        has[e, r] = True
        rank_load[r] += load[k]
    return slots


def _rank_load(p: np.ndarray, replicas: np.ndarray, slots: np.ndarray, mode: str) -> np.ndarray:
    """Expected share of the assignments each rank serves; "perfect" reports the idealised even split (the
    paper's projected balance, not this layout's)."""
    if mode == "perfect":
        return np.full(slots.shape[0], 1.0 / slots.shape[0])
    return _slot_share(p, replicas, slots).sum(axis=1)


def _slot_share(p: np.ndarray, replicas: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """Expected load of each slot (0 for empty slots)."""
    per_replica = p / replicas
    return np.where(slots >= 0, per_replica[np.maximum(slots, 0)], 0.0)
