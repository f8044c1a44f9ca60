"""Request trace files: CSV (with a header row) or JSONL (one object per line).

Columns: arrival_time [s], input_len, output_len [tokens], and optionally
prefix_group (-1 or empty = none) and prefix_len [tokens]. Every bad row is
reported as file:line with what is wrong.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.sim.workload.requests import RequestTable

COLUMNS = ("arrival_time", "input_len", "output_len", "prefix_group", "prefix_len")
_REQUIRED = ("input_len", "output_len")


def read_trace(path: str | Path, *, concurrency: int | None = None) -> RequestTable:
    """Read a trace. With `concurrency` (clients) it is a closed-loop workload: arrival_time
    may be absent and is ignored."""
    closed_loop = concurrency is not None
    p = Path(path)
    if not p.is_file():
        raise CloudMatrixError(f"trace file {p} does not exist; check the path.")
    suffix = p.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise CloudMatrixError(f"trace {p}: use a .csv or .jsonl file (got {suffix or 'no suffix'}).")
    try:
        rows = _csv_rows(p) if suffix == ".csv" else _jsonl_rows(p)
    except UnicodeDecodeError as e:
        raise CloudMatrixError(f"trace {p} is not UTF-8 text (byte {e.start}); save it as UTF-8.") from None

    n = len(rows)
    arrival = np.full(n, np.nan)
    cols = {c: np.zeros(n, dtype=np.int64) for c in COLUMNS[1:]}
    cols["prefix_group"][:] = -1
    prev = -math.inf
    for k, (line, row) in enumerate(rows):
        where = f"{p}:{line}"
        for c in _REQUIRED + (() if closed_loop else ("arrival_time",)):
            if _blank(row.get(c)):
                raise CloudMatrixError(f"{where}: missing {c}; every row needs {', '.join(_needed(closed_loop))}.")
        if not closed_loop:
            t = _number(row["arrival_time"], "arrival_time", where)
            if not (math.isfinite(t) and t >= 0):
                raise CloudMatrixError(f"{where}: arrival_time {t} must be a finite number of seconds >= 0.")
            if t < prev:
                raise CloudMatrixError(
                    f"{where}: arrival_time {t} is before the previous row's {prev}; sort the trace by arrival_time."
                )
            arrival[k] = prev = t
        for c in _REQUIRED:
            v = _integer(row[c], c, where)
            if v < 1:
                raise CloudMatrixError(f"{where}: {c} is {v}; it must be >= 1 token.")
            cols[c][k] = v
        g = -1 if _blank(row.get("prefix_group")) else _integer(row["prefix_group"], "prefix_group", where)
        if g < -1:
            raise CloudMatrixError(f"{where}: prefix_group is {g}; use a group id >= 0, or -1 for none.")
        has_len = not _blank(row.get("prefix_len"))
        if g >= 0:
            if not has_len:
                raise CloudMatrixError(f"{where}: prefix_group {g} needs a prefix_len (tokens shared by the group).")
            pl = _integer(row["prefix_len"], "prefix_len", where)
            if not 0 <= pl <= cols["input_len"][k]:
                raise CloudMatrixError(f"{where}: prefix_len {pl} must lie in [0, input_len={cols['input_len'][k]}].")
            cols["prefix_group"][k], cols["prefix_len"][k] = g, pl
        elif has_len and _integer(row["prefix_len"], "prefix_len", where) != 0:
            raise CloudMatrixError(f"{where}: prefix_len is set but prefix_group is not; give the group id.")
    return RequestTable(arrival, cols["input_len"], cols["output_len"], cols["prefix_group"], cols["prefix_len"],
                    concurrency=concurrency)  # fmt: skip


def write_trace(workload: RequestTable, path: str | Path) -> None:
    """Write a workload as a CSV or JSONL trace (by suffix); read_trace reads it back."""
    p = Path(path)
    w = workload
    if p.suffix.lower() == ".csv":
        with p.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(COLUMNS)
            for i in range(len(w)):
                t = "" if np.isnan(w.arrival_time[i]) else repr(float(w.arrival_time[i]))
                out.writerow([t, w.input_len[i], w.output_len[i], w.prefix_group[i], w.prefix_len[i]])
    elif p.suffix.lower() in (".jsonl", ".ndjson"):
        with p.open("w") as f:
            for i in range(len(w)):
                t = None if np.isnan(w.arrival_time[i]) else float(w.arrival_time[i])
                vals = [t] + [int(a[i]) for a in (w.input_len, w.output_len, w.prefix_group, w.prefix_len)]
                f.write(json.dumps(dict(zip(COLUMNS, vals, strict=True))) + "\n")
    else:
        raise CloudMatrixError(f"trace {p}: use a .csv or .jsonl file name.")


def _needed(closed_loop: bool) -> tuple[str, ...]:
    return _REQUIRED if closed_loop else ("arrival_time", *_REQUIRED)


def _csv_rows(p: Path) -> list[tuple[int, dict[str, str]]]:
    # utf-8-sig: spreadsheets write a byte-order mark before the header
    with p.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header: list[str] | None = None
        rows: list[tuple[int, dict[str, str]]] = []
        for line, rec in enumerate(reader, start=1):
            if not rec or not any(c.strip() for c in rec):
                continue
            if header is None:
                header = [c.strip() for c in rec]
                _check_columns(header, f"{p}:{line}")
                continue
            if len(rec) != len(header):
                raise CloudMatrixError(f"{p}:{line}: {len(rec)} fields, but the header has {len(header)}.")
            rows.append((line, dict(zip(header, (c.strip() for c in rec), strict=True))))
    if header is None:
        raise CloudMatrixError(f"trace {p} is empty; it needs a header row and one row per request.")
    return rows


def _jsonl_rows(p: Path) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    with p.open(encoding="utf-8-sig") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise CloudMatrixError(f"{p}:{line}: invalid JSON ({e.msg}).") from None
            if not isinstance(obj, dict):
                raise CloudMatrixError(f"{p}:{line}: each line must be a JSON object with the trace columns.")
            _check_columns(list(obj), f"{p}:{line}")
            rows.append((line, obj))
    return rows


def _check_columns(names: list[str], where: str) -> None:
    unknown = [c for c in names if c not in COLUMNS]
    if unknown:
        raise CloudMatrixError(f"{where}: unknown column(s) {unknown}; trace columns are {', '.join(COLUMNS)}.")


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v == "")


def _number(v: Any, col: str, where: str) -> float:
    if isinstance(v, bool):
        raise CloudMatrixError(f"{where}: {col} is {v!r}, not a number.")
    try:
        return float(v)
    except (TypeError, ValueError):
        raise CloudMatrixError(f"{where}: {col} is {v!r}, not a number.") from None


def _integer(v: Any, col: str, where: str) -> int:
    x = _number(v, col, where)
    if not (math.isfinite(x) and x == int(x)):
        raise CloudMatrixError(f"{where}: {col} is {v!r}; it must be a whole number.")
    return int(x)
