"""Quantities with units, as written in catalog files ("64 GB", "1.6 TB/s", "224 Gb/s").

Inside the code everything is SI base units: bytes, bytes/s, FLOP/s, seconds,
watts. Catalog files may write plain numbers (taken as those base units) or a
string "<number> <unit>"; this module converts them and names the problem when
a unit is unknown or of the wrong kind.
"""

from __future__ import annotations

import math
import re

_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50}

# dimension -> {unit suffix: factor to the base unit}
_UNITS: dict[str, dict[str, float]] = {
    "bytes": {},
    "bytes/s": {},
    "flop/s": {},
    "seconds": {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9},
    "watts": {},
}
for p, f in _DECIMAL.items():
    _UNITS["bytes"][f"{p}B"] = f
    _UNITS["bytes/s"][f"{p}B/s"] = f
    _UNITS["bytes/s"][f"{p}b/s"] = f / 8  # link rates are quoted in bits
    _UNITS["bytes/s"][f"{p}bps"] = f / 8
    _UNITS["flop/s"][f"{p}FLOPS"] = f
    _UNITS["flop/s"][f"{p}OPS"] = f  # integer ops (TOPS) count like FLOPs for the roofline
    _UNITS["watts"][f"{p}W"] = f
for p, f in _BINARY.items():
    _UNITS["bytes"][f"{p}B"] = f
    _UNITS["bytes/s"][f"{p}B/s"] = f

_QUANTITY = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([^\s0-9].*)?\s*$")


class UnitError(ValueError):
    """A quantity could not be read; the message says what was expected."""


def parse_quantity(value: object, dimension: str) -> float:
    """Return `value` in base units of `dimension` ("bytes", "bytes/s", "flop/s", "seconds", "watts")."""
    units = _UNITS[dimension]
    if isinstance(value, bool):
        raise UnitError(f"expected a {dimension} quantity, got {value!r}")
    if isinstance(value, int | float):
        number, unit = float(value), ""
    elif isinstance(value, str):
        m = _QUANTITY.match(value)
        if not m:
            raise UnitError(f"cannot read {value!r} as a {dimension} quantity; write e.g. {_example(dimension)!r}")
        number, unit = float(m.group(1)), (m.group(2) or "").strip()
    else:
        raise UnitError(f"expected a {dimension} quantity, got {type(value).__name__} {value!r}")
    if not math.isfinite(number):
        raise UnitError(f"expected a finite {dimension} quantity, got {value!r}")
    if unit == "":
        factor = 1.0
    elif unit in units:
        factor = units[unit]
    else:
        raise UnitError(
            f"unknown unit {unit!r} for a {dimension} quantity; "
            f"use one of {_known(dimension)} (e.g. {_example(dimension)!r})"
        )
    return number * factor


def _known(dimension: str) -> str:
    picks = {
        "bytes": "GB, TB, GiB, MB",
        "bytes/s": "GB/s, TB/s, Gb/s",
        "flop/s": "TFLOPS, PFLOPS, TOPS",
        "seconds": "s, ms, us, ns",
        "watts": "W, kW, MW",
    }
    return picks[dimension]


def _example(dimension: str) -> str:
    return {
        "bytes": "64 GB",
        "bytes/s": "1.6 TB/s",
        "flop/s": "376 TFLOPS",
        "seconds": "1.9 us",
        "watts": "700 W",
    }[dimension]
