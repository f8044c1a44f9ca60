"""Per-layer expert statistics (SGLang's `logical_count` dump) and placements computed from other traffic."""

import json

import numpy as np
import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf.expert_load import LayeredExpertLoad
from cloudmatrix.serving.eplb import ExpertPlacement, LayeredPlacement, build_placement, popularity
from cloudmatrix.sim.costs import PoolCosts
from cloudmatrix.sim.scenario import load_scenario


def _skewed(n: int, seed: int) -> np.ndarray:
    w = np.random.default_rng(seed).lognormal(0.0, 1.0, n)
    return w / w.sum()


def _sglang_dump(path, layers: list[np.ndarray], dense: int = 3) -> None:
    counts = [[0.0] * layers[0].size] * dense + [list(np.round(p * 1e6)) for p in layers]
    path.write_text(json.dumps({"logical_count": counts}))


def test_sglang_dump_reads_one_row_per_moe_layer(tmp_path):
    layers = [_skewed(16, s) for s in range(4)]
    f = tmp_path / "prefill.json"
    _sglang_dump(f, layers)
    w = popularity("file", 16, path=f)
    assert w.shape == (4, 16)  # the three all-zero (dense) layers are dropped
    assert np.allclose(w.sum(axis=1), 1.0)
    assert np.allclose(w, np.stack(layers), atol=1e-6)
    with pytest.raises(CloudMatrixError, match="16 expert weights per layer but the model has 32"):
        popularity("file", 32, path=f)


@pytest.mark.parametrize(
    "counts, msg",
    [
        ([[0, 0], [0, 0]], "all zeros"),
        ([[1, 2], [3]], "equally long"),
        ([[1, "x"]], "not a number"),
        ([[1, -2]], "weight of expert 1"),
    ],
)
def test_sglang_dump_errors_name_the_problem(tmp_path, counts, msg):
    f = tmp_path / "bad.json"
    f.write_text(json.dumps({"logical_count": counts}))
    with pytest.raises(CloudMatrixError, match=msg):
        popularity("file", 2, path=f)


def test_layered_placement_is_the_mean_of_its_layers():
    layers = [_skewed(64, s) for s in range(3)]
    pl = build_placement(np.stack(layers), 8, 10, "eplb")
    assert isinstance(pl, LayeredPlacement)
    one = [ExpertPlacement.build(p, 8, 10, "eplb") for p in layers]
    assert pl.static_imbalance == pytest.approx(np.mean([x.static_imbalance for x in one]))
    load = pl.expert_load(8)
    assert isinstance(load, LayeredExpertLoad)
    for t in (16, 4096):
        want = np.mean([x.expert_load(8).imbalance(t) for x in one])
        assert load.imbalance(t) == pytest.approx(want)
        assert pl.step_imbalance(t, 8) == pytest.approx(want)
        assert load.distinct_per_die(t) == pytest.approx(np.mean([x.expert_load(8).distinct_per_die(t) for x in one]))
    # a single vector still gives the plain placement
    assert isinstance(build_placement(layers[0], 8, 10, "eplb"), ExpertPlacement)


def test_a_placement_from_other_traffic_is_less_balanced():
    own, other = _skewed(64, 1), _skewed(64, 2)
    matched = build_placement(own, 8, 10, "eplb")
    stale = build_placement(own, 8, 10, "eplb", computed_from=other)
    assert np.array_equal(stale.slots, ExpertPlacement.build(other, 8, 10, "eplb").slots)
    assert np.allclose(stale.popularity, own)
    assert stale.static_imbalance > matched.static_imbalance + 0.05
    # the expected rank loads still account for all the traffic
    assert stale.rank_load.sum() == pytest.approx(1.0)
    with pytest.raises(CloudMatrixError, match="same model"):
        build_placement(_skewed(32, 3), 8, 10, "eplb", computed_from=other)
    with pytest.raises(CloudMatrixError, match="MoE layers"):
        build_placement(np.stack([own, other, own]), 8, 10, "eplb", computed_from=np.stack([own, other]))


def test_scenario_reads_per_layer_files_and_a_stale_placement(tmp_path):
    n = 256  # DeepSeek-R1's routed experts
    served = [_skewed(n, s) for s in range(4)]
    placed = [_skewed(n, s + 10) for s in range(4)]
    _sglang_dump(tmp_path / "served.json", served)
    _sglang_dump(tmp_path / "placed.json", placed)

    def imbalance(over):
        sc = load_scenario("paper-prefill", over)
        system, model = sc.check()
        costs = PoolCosts(model, system, sc.deployment(sc.prefill, model), sc.experts)
        return costs.imbalance(sc.prefill.tokens_per_die)

    own = {"experts.popularity": "file", "experts.path": str(tmp_path / "served.json")}
    matched, stale = imbalance(own), imbalance({**own, "experts.placement_path": str(tmp_path / "placed.json")})
    assert 1.0 <= matched < 1.05  # EPLB on the traffic's own statistics balances 262k tokens well
    assert stale > matched + 0.1
    with pytest.raises(CloudMatrixError, match="needs path"):
        load_scenario("paper-prefill", {"experts.popularity": "file"})
    with pytest.raises(CloudMatrixError, match='set popularity = "file" or remove path'):
        load_scenario("paper-prefill", {"experts.path": str(tmp_path / "served.json")})
