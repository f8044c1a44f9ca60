"""Cost arithmetic and pool split against hand-computed values."""

import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.plan.economics import (
    Economics,
    cost_per_million_tokens,
    ideal_prefill_fraction,
    split_fixed_system,
    split_sized_cluster,
)


def test_cost_amortisation_energy_and_pue_by_hand():
    # $8.76M over 1 year = $1,000/h; 100 kW x PUE 1.5 x $0.10/kWh = $15/h;
    # 1,000 tokens/s at 50% utilisation = 1.8M tokens/h -> $1,015 / 1.8 = $563.89 per million tokens
    econ = Economics(years=1, usd_per_kwh=0.10, pue=1.5, utilisation=0.5)
    c = cost_per_million_tokens(1000.0, 8.76e6, 100e3, econ)
    assert c.capex_usd_per_hour == pytest.approx(1000.0)
    assert c.energy_usd_per_hour == pytest.approx(15.0)
    assert c.usd_per_million_tokens == pytest.approx(1015 / 1.8)
    assert c.joules_per_token == pytest.approx(100.0)  # 100 kW / 1,000 tokens/s, IT power


def test_cost_defaults_four_years():
    # $3M over 4 years = $85.62/h; 145 kW x 1.3 x $0.08 = $15.08/h; 100,000 tokens/s = 360M tokens/h
    c = cost_per_million_tokens(1e5, 3e6, 145e3, Economics())
    assert c.usd_per_million_tokens == pytest.approx((3e6 / (4 * 8760) + 15.08) / 360)


@pytest.mark.parametrize(
    "econ",
    [
        Economics(years=0),
        Economics(usd_per_kwh=-1),
        Economics(pue=0.9),
        Economics(utilisation=0),
        Economics(utilisation=1.5),
    ],
)
def test_bad_economics(econ):
    with pytest.raises(CloudMatrixError):
        cost_per_million_tokens(1.0, 1.0, 1.0, econ)


def test_ideal_fraction():
    # prefill 4,000 tokens at 8,000/s per chip = 0.5 chip-s; decode 500 at 2,000/s = 0.25 chip-s -> 2/3 prefill
    assert ideal_prefill_fraction(8000, 2000, 4000, 500) == pytest.approx(2 / 3)


def test_fixed_split_balances_whole_instances():
    # 12 chips, 2-chip instances of each: 4 prefill (16 req/s) + 2 decode (16 req/s) is exactly balanced
    s = split_fixed_system(12, 2, 2, 8000, 2000, 4000, 500)
    assert (s.prefill_instances, s.decode_instances) == (4, 2)
    assert s.requests_per_s == pytest.approx(16.0)
    assert s.output_tokens_per_s == pytest.approx(16 * 500)
    assert s.bottleneck == "balanced"
    # prefill chips x rate = r x input, decode chips x rate = r x output
    assert s.prefill_chips * 8000 == pytest.approx(s.requests_per_s * 4000)
    assert s.decode_chips * 2000 == pytest.approx(s.requests_per_s * 500)


def test_fixed_split_leaves_idle_chips_when_instances_do_not_tile():
    s = split_fixed_system(13, 2, 2, 8000, 2000, 4000, 500)
    assert s.chips == 12 and s.requests_per_s == pytest.approx(16.0)  # the 13th chip cannot help


def test_fixed_split_needs_room_for_both_pools():
    with pytest.raises(CloudMatrixError, match="cannot hold"):
        split_fixed_system(3, 2, 2, 8000, 2000, 4000, 500)


def test_sized_cluster_adds_prefill_until_balanced():
    # one 4-chip decode instance finishes 16 req/s; each 2-chip prefill instance admits 4 req/s -> 4 of them
    s = split_sized_cluster(2, 4, 8000, 2000, 4000, 500)
    assert (s.prefill_instances, s.decode_instances, s.chips) == (4, 1, 12)
    assert s.bottleneck == "balanced"


@pytest.mark.parametrize(
    "econ",
    [
        Economics(years=float("inf")),
        Economics(usd_per_kwh=float("nan")),
        Economics(pue=float("inf")),
        Economics(pue=1e300, usd_per_kwh=1e300),  # each finite, the product is not
        Economics(years=1e-320),
    ],
    ids=["inf-years", "nan-price", "inf-pue", "overflow", "vanishing-years"],
)
def test_non_finite_economics_are_errors(econ):
    with pytest.raises(CloudMatrixError):
        cost_per_million_tokens(1e5, 3e6, 145e3, econ)
