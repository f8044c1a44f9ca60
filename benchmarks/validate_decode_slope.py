"""Does the twin's decode curve rise with load as steeply as the measured one? (issue 10, "the decode curve
rises with batch as steeply as the measured rows do")

Reads the rows CSV of a silicon run (`cloudmatrix validate --suite silicon --csv rows.csv`) and, for every
measured series (one slice, model, precision, ISL/OSL and layout at three or more client concurrencies),
fits log TPOT = a + b log(concurrency) to the measured and to the predicted values; prints the median slope b
of each, their median ratio (twin / measured), per mode and overall. A slope is how much TPOT grows per
doubling of the load (2^b); nothing here is fitted into the twin.

    python benchmarks/validate_decode_slope.py rows.csv
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
from collections import defaultdict

_CONC = re.compile(r" c(\d+) (.*)")
_NOT_LAYOUT = re.compile(r"batch \d+|; median of \d+ measurements|; layout read back.*")


def series(path: str) -> dict[tuple, list[tuple[int, float, float]]]:
    """(slice, conditions before the concurrency, layout) -> [(concurrency, measured, predicted)] of TPOT rows."""
    out: dict[tuple, list[tuple[int, float, float]]] = defaultdict(list)
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if r["suite"] != "silicon" or r["metric"] != "tpot" or not r["error"] or r["tag"] != "validation":
                continue
            m = _CONC.search(r["conditions"])
            if m is None:
                continue
            key = (r["slice"], r["conditions"][: m.start()], _NOT_LAYOUT.sub("", m.group(2)))
            out[key].append((int(m.group(1)), float(r["measured"]), float(r["predicted"])))
    return out


def slope(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log y on log x; None without two distinct x."""
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(y) for _, y in points]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx


def slopes(groups: dict[tuple, list[tuple[int, float, float]]], min_points: int = 3) -> list[tuple[str, float, float]]:
    """(mode, twin slope, measured slope) of every series with `min_points` concurrencies or more."""
    out = []
    for (slice_, *_), pts in groups.items():
        if len({c for c, _, _ in pts}) < min_points:
            continue
        measured = slope([(c, m) for c, m, _ in pts])
        twin = slope([(c, p) for c, _, p in pts])
        if measured is not None and twin is not None:
            out.append((slice_.rsplit(" ", 1)[-1], twin, measured))
    return out


def report(rows: list[tuple[str, float, float]]) -> None:
    print(f"{'series':10s} {'n':>4s} {'measured slope':>15s} {'twin slope':>11s} {'twin / measured':>16s}")
    for mode in sorted({m for m, _, _ in rows}) + ["all"]:
        sel = [(t, m) for md, t, m in rows if mode in ("all", md)]
        ratios = [t / m for t, m in sel if m > 0.02]  # flat measured series carry no slope to compare
        ratio = statistics.median(ratios) if ratios else float("nan")
        measured, twin = statistics.median(m for _, m in sel), statistics.median(t for t, _ in sel)
        print(f"{mode:10s} {len(sel):4d} {measured:15.3f} {twin:11.3f} {ratio:16.2f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("csv", help="rows CSV of `cloudmatrix validate --suite silicon --csv`")
    p.add_argument("--min-points", type=int, default=3, help="concurrencies a series needs (default 3)")
    a = p.parse_args(argv)
    rows = slopes(series(a.csv), a.min_points)
    if not rows:
        raise SystemExit(f"{a.csv}: no series with {a.min_points} or more concurrencies")
    report(rows)


if __name__ == "__main__":
    main()
