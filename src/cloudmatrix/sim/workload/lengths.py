"""Token-length distributions: constant, uniform, truncated lognormal (redrawn, never clamped)."""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

# Lognormal truncation redraws values outside [min, max]; refuse when that would
# practically never end (under 0.1% of the mass inside).
_MIN_MASS = 1e-3
# Longest prompt or answer a length may describe (16M tokens, far past any model's context):
# keeps draws inside int64 and array sizes sane.
MAX_TOKENS = 1 << 24


class LengthSpec(BaseModel):
    """A token-length distribution. In TOML a bare integer means a constant.

    constant: value. uniform: integers lo..hi inclusive. lognormal: mean [tokens] and
    either sigma (of the log) or cv (of the length); optional min/max truncate it
    (out-of-range draws are redrawn, never clamped). Draws round to integers >= 1.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: Literal["constant", "uniform", "lognormal"]
    value: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    lo: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    hi: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    mean: float | None = Field(default=None, gt=0, le=MAX_TOKENS, allow_inf_nan=False)
    sigma: float | None = Field(default=None, gt=0, le=10, allow_inf_nan=False)
    cv: float | None = Field(default=None, gt=0, le=100, allow_inf_nan=False)
    min: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max: int | None = Field(default=None, ge=1, le=MAX_TOKENS)

    @model_validator(mode="after")
    def _fields_match_kind(self) -> LengthSpec:
        allowed = {"constant": {"value"}, "uniform": {"lo", "hi"},
                   "lognormal": {"mean", "sigma", "cv", "min", "max"}}[self.kind]  # fmt: skip
        given = {k for k in ("value", "lo", "hi", "mean", "sigma", "cv", "min", "max") if getattr(self, k) is not None}
        if given - allowed:
            raise ValueError(
                f"{sorted(given - allowed)} do not apply to kind={self.kind!r} (it takes {sorted(allowed)})"
            )
        if self.kind == "constant" and self.value is None:
            raise ValueError("kind='constant' needs value")
        if self.kind == "uniform" and (self.lo is None or self.hi is None or self.lo > self.hi):
            raise ValueError("kind='uniform' needs lo <= hi")
        if self.kind == "lognormal":
            if self.mean is None or (self.sigma is None) == (self.cv is None):
                raise ValueError("kind='lognormal' needs mean and exactly one of sigma or cv")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(f"min ({self.min}) is above max ({self.max})")
            if self._mass_inside() < _MIN_MASS:
                raise ValueError(
                    f"under {_MIN_MASS:.1%} of this lognormal lies in [min, max]; move the bounds toward "
                    f"the mean ({self.mean}) or widen them"
                )
        return self

    def _log_params(self) -> tuple[float, float]:
        s2 = self.sigma**2 if self.sigma is not None else math.log1p(self.cv**2)
        return math.log(self.mean) - s2 / 2, math.sqrt(s2)

    def _mass_inside(self) -> float:
        mu, s = self._log_params()

        def cdf(x: float) -> float:
            return 0.0 if x <= 0 else 0.5 * (1 + math.erf((math.log(x) - mu) / (s * math.sqrt(2))))

        lo = (self.min if self.min is not None else 1) - 0.5
        hi = cdf((self.max if self.max is not None else MAX_TOKENS) + 0.5)
        return hi - cdf(lo)

    @property
    def min_value(self) -> int:
        """Smallest length this distribution can produce."""
        if self.kind == "constant":
            return self.value  # type: ignore[return-value]
        if self.kind == "uniform":
            return self.lo  # type: ignore[return-value]
        return self.min or 1

    @property
    def max_value(self) -> int:
        """Largest length this distribution can produce."""
        if self.kind == "constant":
            return self.value  # type: ignore[return-value]
        if self.kind == "uniform":
            return self.hi  # type: ignore[return-value]
        return self.max or MAX_TOKENS

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        if self.kind == "constant":
            return np.full(n, self.value, dtype=np.int64)
        if self.kind == "uniform":
            return rng.integers(self.lo, self.hi + 1, size=n, dtype=np.int64)
        mu, s = self._log_params()
        lo, hi = self.min or 1, self.max or MAX_TOKENS
        out = np.rint(rng.lognormal(mu, s, n))
        bad = np.flatnonzero((out < lo) | (out > hi))
        while bad.size:  # redraw only the rejected ones; terminates: mass inside >= 0.1%
            out[bad] = np.rint(rng.lognormal(mu, s, bad.size))
            bad = bad[(out[bad] < lo) | (out[bad] > hi)]
        return out.astype(np.int64)


def length_from_toml(v: Any) -> Any:
    """A bare integer in TOML is a constant length."""
    if isinstance(v, int) and not isinstance(v, bool):
        return {"kind": "constant", "value": v}
    return v
