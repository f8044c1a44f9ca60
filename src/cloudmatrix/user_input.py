"""Checks on what a user hands the program: numbers from flags, text files, output paths.

Each check raises CloudMatrixError with one line naming the input, the bad value and the fix, so every
command reports bad input the same way and nothing is silently clamped. NaN and infinity never pass.
"""

from __future__ import annotations

import math
from pathlib import Path

from cloudmatrix.errors import CloudMatrixError


def finite(
    name: str, value: float, *, minimum: float | None = None, above: float | None = None, maximum: float | None = None
) -> float:
    """`value` if it is a finite number within the bounds (`minimum` inclusive, `above` exclusive)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise CloudMatrixError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise CloudMatrixError(f"{name} must be at least {minimum:g}, got {value:g}")
    if above is not None and not value > above:
        raise CloudMatrixError(f"{name} must be greater than {above:g}, got {value:g}")
    if maximum is not None and value > maximum:
        raise CloudMatrixError(f"{name} must be at most {maximum:g}, got {value:g}")
    return value


def positive(name: str, value: float) -> float:
    """A finite number > 0."""
    return finite(name, value, above=0)


def positive_int(name: str, value: int) -> int:
    """A whole number >= 1 (flags typed `int` are whole already; this rejects 0 and negatives)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise CloudMatrixError(f"{name} must be a whole number, got {value!r}")
    if value < 1:
        raise CloudMatrixError(f"{name} must be at least 1, got {value}")
    return value


def read_text(path: str | Path, what: str = "file") -> str:
    """The UTF-8 text of `path` (a leading byte-order mark dropped), or a one-line error naming the file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except IsADirectoryError:
        raise CloudMatrixError(f"{what} {p} is a directory; give a file") from None
    except FileNotFoundError:
        raise CloudMatrixError(f"{what} {p} does not exist") from None
    except OSError as e:
        raise CloudMatrixError(f"{what} {p}: cannot read ({e.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CloudMatrixError(
            f"{what} {p} is not UTF-8 text (byte {e.start}: {data[e.start : e.start + 1]!r}); save it as UTF-8"
        ) from None


def output_dir(path: str | Path, what: str) -> Path:
    """A directory to write into, created now (before any long computation) or a one-line error."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CloudMatrixError(f"{what} {p} is a file, not a directory; give a directory path")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CloudMatrixError(f"{what} {p}: cannot create the directory ({e.strerror})") from None
    return p


def output_file(path: str | Path, what: str) -> Path:
    """A file path to write, checked now: not a directory, its folder exists or can be created."""
    p = Path(path)
    if p.is_dir():
        raise CloudMatrixError(f"{what} {p} is a directory; give a file path")
    parent = p.parent
    for q in (parent, *parent.parents):
        if q.exists():
            if not q.is_dir():
                raise CloudMatrixError(f"{what} {p}: {q} is a file, so it cannot hold {p.name}")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CloudMatrixError(f"{what} {p}: cannot create {parent} ({e.strerror})") from None
    return p
