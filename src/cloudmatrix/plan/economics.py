"""Money and energy per output token, and the prefill/decode pool split that balances a workload.

Pure arithmetic, no cost model: the inputs are rates (tokens/s per chip) that `plan.sweep` measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cloudmatrix.errors import CloudMatrixError

HOURS_PER_YEAR = 8760.0  # 365 days


@dataclass(frozen=True)
class Economics:
    years: float = 4.0  # hardware amortised linearly over this many years
    usd_per_kwh: float = 0.08
    pue: float = 1.3  # facility power / IT power
    utilisation: float = 1.0  # fraction of the time the system serves at the modelled rate

    def validate(self) -> None:
        for name in ("years", "usd_per_kwh", "pue", "utilisation"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise CloudMatrixError(f"{name} must be positive and finite, got {v}")
        if self.pue < 1:
            raise CloudMatrixError(f"PUE is facility/IT power and cannot be below 1, got {self.pue}")
        if self.utilisation > 1:
            raise CloudMatrixError(f"utilisation is a fraction of time in (0, 1], got {self.utilisation}")


@dataclass(frozen=True)
class Cost:
    capex_usd_per_hour: float
    energy_usd_per_hour: float
    usd_per_million_tokens: float
    joules_per_token: float  # IT power (no PUE) / tokens per second while serving


def cost_per_million_tokens(tokens_per_s: float, price_usd: float, power_w: float, econ: Economics) -> Cost:
    """Cost of a million output tokens on a system that produces `tokens_per_s` while serving.

        capex  $/h = price_usd / (years * 8760 h)                       (linear amortisation, no interest)
        energy $/h = power_w / 1000 * pue * usd_per_kwh                (drawn all the time, busy or idle)
        tokens / h = tokens_per_s * 3600 * utilisation
        $/Mtok     = (capex $/h + energy $/h) / (tokens / h) * 1e6
        J/token    = power_w / tokens_per_s                            (IT power while serving, no PUE)

    Power at load is charged even for the idle (1 - utilisation) share of the time: conservative.
    """
    econ.validate()
    if tokens_per_s <= 0 or price_usd <= 0 or power_w <= 0:
        raise CloudMatrixError(
            f"tokens/s, price and power must be positive, got {tokens_per_s}, {price_usd} and {power_w}"
        )
    capex = price_usd / (econ.years * HOURS_PER_YEAR)
    energy = power_w / 1000 * econ.pue * econ.usd_per_kwh
    tokens_per_hour = tokens_per_s * 3600 * econ.utilisation
    cost = Cost(capex, energy, (capex + energy) / tokens_per_hour * 1e6, power_w / tokens_per_s)
    if not all(math.isfinite(v) and v > 0 for v in vars(cost).values()):
        raise CloudMatrixError(
            f"the cost per token overflows or vanishes (years {econ.years:g}, ${econ.usd_per_kwh:g}/kWh, "
            f"PUE {econ.pue:g}, utilisation {econ.utilisation:g}); use realistic economics"
        )
    return cost


@dataclass(frozen=True)
class PoolSplit:
    prefill_instances: int
    decode_instances: int
    prefill_chips: int
    decode_chips: int
    requests_per_s: float
    output_tokens_per_s: float
    bottleneck: str  # "prefill", "decode" or "balanced"
    ideal_prefill_fraction: float  # of the serving chips, if chips could be split continuously

    @property
    def chips(self) -> int:
        return self.prefill_chips + self.decode_chips


def ideal_prefill_fraction(prefill_rate: float, decode_rate: float, input_len: float, output_len: float) -> float:
    """Share of chips in prefill when prefill chips x prefill rate = r x input_len and
    decode chips x decode rate = r x output_len: (I/P) / (I/P + O/D)."""
    p, d = input_len / prefill_rate, output_len / decode_rate
    return p / (p + d)


def _split(np_: int, nd: int, sp: int, sd: int, rp: float, rd: float, i: float, o: float) -> PoolSplit:
    rate_p = np_ * sp * rp / i  # requests/s the prefill pool can admit
    rate_d = nd * sd * rd / o  # requests/s the decode pool can finish
    r = min(rate_p, rate_d)
    bottleneck = (
        "balanced" if math.isclose(rate_p, rate_d, rel_tol=1e-9) else ("prefill" if rate_p < rate_d else "decode")
    )
    return PoolSplit(np_, nd, np_ * sp, nd * sd, r, r * o, bottleneck, ideal_prefill_fraction(rp, rd, i, o))


def _check(sp: int, sd: int, rp: float, rd: float, i: float, o: float) -> None:
    if min(sp, sd) <= 0 or min(rp, rd, i, o) <= 0:
        raise CloudMatrixError("pool split needs positive instance sizes, rates and lengths")


def split_fixed_system(
    chips: int,
    prefill_chips: int,
    decode_chips: int,
    prefill_rate: float,
    decode_rate: float,
    input_len: float,
    output_len: float,
) -> PoolSplit:
    """Whole instances in a system of `chips` chips: the (prefill, decode) instance counts, at least one of
    each, that serve the most requests/s (ties: fewer chips). Rates are tokens/s per chip."""
    _check(prefill_chips, decode_chips, prefill_rate, decode_rate, input_len, output_len)
    best: PoolSplit | None = None
    for nd in range(1, (chips - prefill_chips) // decode_chips + 1):
        for np_ in range(1, (chips - nd * decode_chips) // prefill_chips + 1):
            s = _split(np_, nd, prefill_chips, decode_chips, prefill_rate, decode_rate, input_len, output_len)
            if best is None or (s.requests_per_s, -s.chips) > (best.requests_per_s, -best.chips):
                best = s
    if best is None:
        raise CloudMatrixError(
            f"a {chips}-chip system cannot hold one prefill ({prefill_chips} chips) and one decode "
            f"({decode_chips} chips) instance"
        )
    return best


def split_sized_cluster(
    prefill_chips: int,
    decode_chips: int,
    prefill_rate: float,
    decode_rate: float,
    input_len: float,
    output_len: float,
    max_prefill_instances: int = 64,
) -> PoolSplit:
    """A cluster bought to fit (HGX): one decode instance and the number of prefill instances that gives the
    most output tokens/s per chip."""
    _check(prefill_chips, decode_chips, prefill_rate, decode_rate, input_len, output_len)
    splits = [
        _split(n, 1, prefill_chips, decode_chips, prefill_rate, decode_rate, input_len, output_len)
        for n in range(1, max_prefill_instances + 1)
    ]
    return max(splits, key=lambda s: (s.output_tokens_per_s / s.chips, -s.chips))
