import json

import numpy as np
import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.serving.eplb import ExpertPlacement, popularity, read_popularity


def test_popularity_kinds():
    u = popularity("uniform", 8)
    assert np.allclose(u, 1 / 8)
    z = popularity("zipf", 4, s=1.0)
    assert z.sum() == pytest.approx(1.0)
    assert z[0] / z[3] == pytest.approx(4.0)  # unshuffled: expert 0 hottest
    a = popularity("zipf", 256, s=0.8, seed=3)
    assert np.array_equal(a, popularity("zipf", 256, s=0.8, seed=3))
    assert not np.array_equal(a, popularity("zipf", 256, s=0.8, seed=4))
    assert np.sort(a)[::-1] == pytest.approx(popularity("zipf", 256, s=0.8))


def test_popularity_files(tmp_path):
    j = tmp_path / "p.json"
    j.write_text(json.dumps({"weights": [1, 3]}))
    assert popularity("file", 2, path=j).tolist() == [0.25, 0.75]
    c = tmp_path / "p.csv"
    c.write_text("expert,weight\n0,2\n1,2\n2,4\n")
    assert read_popularity(c).tolist() == [0.25, 0.25, 0.5]
    plain = tmp_path / "plain.csv"
    plain.write_text("1\n1\n")
    assert read_popularity(plain).tolist() == [0.5, 0.5]
    with pytest.raises(CloudMatrixError, match="3 expert weights but the model has 4"):
        popularity("file", 4, path=c)
    bad = tmp_path / "bad.csv"
    bad.write_text("weight\n1\nabc\n")
    with pytest.raises(CloudMatrixError, match=r"bad\.csv:3"):
        read_popularity(bad)
    neg = tmp_path / "neg.json"
    neg.write_text("[1, -1]")
    with pytest.raises(CloudMatrixError, match="expert 1"):
        read_popularity(neg)
    with pytest.raises(CloudMatrixError, match="does not exist"):
        read_popularity(tmp_path / "missing.csv")
    with pytest.raises(CloudMatrixError, match="unknown popularity kind"):
        popularity("pareto", 4)


def test_uniform_perfect_and_exact_fit_are_balanced():
    u = popularity("uniform", 256)
    assert ExpertPlacement.build(u, 32, 8, "perfect").static_imbalance == 1.0
    assert ExpertPlacement.build(u, 32, 8, "none").static_imbalance == pytest.approx(1.0)
    spare = ExpertPlacement.build(u, 32, 9, "none")  # spare slots left empty, ids spread evenly
    assert spare.static_imbalance == pytest.approx(1.0)
    assert (spare.slots[:, :8] >= 0).all() and (spare.slots[:, 8] == -1).all()
    # 256 experts on 288 single-slot ranks: 32 ranks idle, so max/mean = 288/256 even when uniform.
    assert ExpertPlacement.build(u, 288, 1, "eplb").static_imbalance == pytest.approx(1.125)
    perfect = ExpertPlacement.build(popularity("zipf", 256, s=1.0, seed=0), 32, 9, "perfect")
    assert perfect.static_imbalance == 1.0
    assert perfect.expected_step_imbalance(64, 8) == 1.0


def test_redundant_experts_lower_static_imbalance_for_zipf():
    p = popularity("zipf", 256, s=0.8, seed=7)
    none = ExpertPlacement.build(p, 32, 9, "none")
    lpt_only = ExpertPlacement.build(p, 32, 8, "eplb")  # no spare slots: packing only
    eplb = ExpertPlacement.build(p, 32, 9, "eplb")
    assert eplb.redundant_slots == 32
    assert eplb.static_imbalance < lpt_only.static_imbalance < none.static_imbalance
    assert eplb.static_imbalance < 1.05
    # Decode layout: 288 single-slot ranks; hot experts get the replicas.
    dec = ExpertPlacement.build(p, 288, 1, "eplb")
    assert dec.replicas.sum() == 288
    hottest, coldest = np.argmax(p), np.argmin(p)
    assert dec.replicas[hottest] > 1 and dec.replicas[coldest] == 1
    assert dec.static_imbalance < ExpertPlacement.build(p, 288, 1, "none").static_imbalance


def test_placement_invariants():
    p = popularity("zipf", 64, s=1.2, seed=1)
    pl = ExpertPlacement.build(p, 8, 10, "eplb")
    # Every slot filled, every expert present, its replica count matches the slots.
    assert (pl.slots >= 0).all()
    assert np.array_equal(np.bincount(pl.slots.ravel(), minlength=64), pl.replicas)
    assert pl.rank_load.sum() == pytest.approx(1.0)
    for r in range(pl.ranks):  # no rank holds two replicas of one expert
        assert len(set(pl.slots[r].tolist())) == pl.slots_per_rank


def test_step_imbalance_falls_with_tokens_and_is_seeded():
    p = popularity("zipf", 256, s=0.6, seed=2)
    pl = ExpertPlacement.build(p, 32, 9, "eplb")
    small = pl.expected_step_imbalance(16, 8, samples=200, seed=1)
    mid = pl.expected_step_imbalance(1024, 8, samples=200, seed=1)
    large = pl.expected_step_imbalance(65536, 8, samples=200, seed=1)
    assert small > mid > large >= 1.0
    assert large == pytest.approx(pl.static_imbalance, abs=0.03)
    assert pl.expected_step_imbalance(16, 8, samples=200, seed=1) == small
    fresh = ExpertPlacement.build(p, 32, 9, "eplb")
    assert fresh.expected_step_imbalance(16, 8, samples=200, seed=1) == small
    # Interpolated figure lies between its grid neighbours.
    v = pl.step_imbalance(1500, 8, samples=64)
    assert pl.step_imbalance(2048, 8, samples=64) <= v <= pl.step_imbalance(1024, 8, samples=64)


def test_placement_errors():
    p = popularity("uniform", 256)
    with pytest.raises(CloudMatrixError, match="cannot hold"):
        ExpertPlacement.build(p, 31, 8, "eplb")
    with pytest.raises(CloudMatrixError, match="unknown placement mode"):
        ExpertPlacement.build(p, 32, 8, "best")  # type: ignore[arg-type]
    pl = ExpertPlacement.build(popularity("uniform", 4), 4, 1, "eplb")
    with pytest.raises(CloudMatrixError, match="top_k"):
        pl.expected_step_imbalance(10, 5)
