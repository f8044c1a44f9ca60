"""Split the silicon suite's TTFT error by whether the measuring client warmed the server up first (issue 10).

The aggregated rows of aiconfigurator-core's measured set are InferenceMAX runs. Its client gained warm-up requests
(`--num-warmups 2 x CONC`) on 2026-01-21 (InferenceMAX d053ae24, "upstream kimbochen/bench_serving, adding warmup",
benchmarks/benchmark_lib.sh); a run measured before that starts its timed requests on a server that has never served
a request, so its mean TTFT carries whatever the stack does on first use (compiles, autotuning, allocations), which
no kernel table holds and the twin does not model. Each CSV row records its measurement date (`measured=` in
silicon_data_source). This script reads a `cloudmatrix validate --csv` file and the installed measured set and
prints TTFT and TPOT MAPE per slice for rows measured before and after that date, and the median TTFT excess
(measured - predicted) at c <= 16. The disaggregated rows ran another client (srt-slurm's), so their split by date is
printed but says nothing about warm-ups. Validation only: nothing here changes a prediction or a parameter.

    cloudmatrix validate --suite silicon --csv rows.csv
    python benchmarks/validate_client_warmup.py rows.csv
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from cloudmatrix.validate.silicon_translate import CLIENT_WARMUP_SINCE as WARMUP_SINCE  # InferenceMAX d053ae24

LOW_LOAD = 16  # clients: the "low load" rows whose excess is printed


def measured_rows() -> dict:
    """Row id -> the measured set's row (its date, `measured_on`, and its client concurrency)."""
    from cloudmatrix.validate.silicon_csv import load_silicon_set

    return {m.id: m.row for m in load_silicon_set().measurements}


def side(date: str | None) -> str:
    """Which side of the client's warm-up date a measurement falls on."""
    return "undated" if date is None else ("after" if date >= WARMUP_SINCE else "before")


def predicted(rows_csv: Path) -> list[dict]:
    """The CSV's predicted validation rows of the silicon suite (refused and calibration rows left out)."""
    with rows_csv.open() as f:
        return [
            r for r in csv.DictReader(f)
            if r["suite"] == "silicon" and r["tag"] == "validation" and r["error"] not in ("", "None")
        ]  # fmt: skip


def split(rows_csv: Path, dates: dict[str, str | None]) -> dict[tuple[str, str, str], list[tuple[float, float, float]]]:
    """(slice, before/after, metric) -> [(error, measured, predicted)] for the predicted validation rows."""
    out: dict[tuple[str, str, str], list[tuple[float, float, float]]] = defaultdict(list)
    for r in predicted(rows_csv):
        row = (float(r["error"]), float(r["measured"]), float(r["predicted"]))
        out[(r["slice"], side(dates.get(r["id"])), r["metric"])].append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rows", type=Path, help="a CSV written by `cloudmatrix validate --csv`")
    args = ap.parse_args(argv)
    if not args.rows.is_file():
        print(f"error: {args.rows} is not a file; write one with `cloudmatrix validate --suite silicon --csv PATH`",
              file=sys.stderr)  # fmt: skip
        return 2
    rows = measured_rows()
    dates = {rid: row.measured_on for rid, row in rows.items()}
    groups = split(args.rows, dates)
    if not groups:
        print(f"error: {args.rows} holds no predicted silicon rows; is it a `cloudmatrix validate --csv` file?",
              file=sys.stderr)  # fmt: skip
        return 2
    low: dict[tuple[str, str], list[float]] = defaultdict(list)  # TTFT excess at low load, ms
    for r in predicted(args.rows):
        row = rows.get(r["id"])
        if r["metric"] == "ttft" and row is not None and row.concurrency is not None and row.concurrency <= LOW_LOAD:
            low[(r["slice"], side(row.measured_on))].append((float(r["measured"]) - float(r["predicted"])) * 1e3)
    total = {k: sum(len(v) for (s, w, m), v in groups.items() if m == k) for k in ("ttft", "tpot")}
    print(f"measured before / after the client's warm-ups ({WARMUP_SINCE}); TTFT points = share of the suite's "
          f"TTFT MAPE ({total['ttft']} rows)")  # fmt: skip
    print(f"{'slice':28s} {'measured':9s} {'rows':>4s} {'TTFT MAPE':>9s} {'median':>7s} {'points':>6s} "
          f"{'TPOT MAPE':>9s} {'c<=16 excess':>12s}")  # fmt: skip
    for s, when in sorted({(s, w) for s, w, _ in groups}):
        t = groups.get((s, when, "ttft"), [])
        p = groups.get((s, when, "tpot"), [])
        if not t:
            continue
        mape = 100 * sum(abs(e) for e, _, _ in t) / len(t)
        med = 100 * statistics.median(e for e, _, _ in t)
        pts = 100 * sum(abs(e) for e, _, _ in t) / total["ttft"]
        tp = f"{100 * sum(abs(e) for e, _, _ in p) / len(p):8.1f}%" if p else "       -"
        ex = low.get((s, when))
        exs = f"{statistics.median(ex):9.0f} ms" if ex else "           -"
        print(f"{s:28s} {when:9s} {len(t):4d} {mape:8.1f}% {med:+6.1f}% {pts:6.1f} {tp} {exs}")
    for mode in ("agg", "disagg"):
        for when in ("before", "after"):
            t = [e for (s, w, m), v in groups.items() if m == "ttft" and w == when and s.endswith(" " + mode)
                 for e, _, _ in v]  # fmt: skip
            if t:
                print(f"all {mode:6s} {when:7s} rows {len(t):4d}  TTFT MAPE {100 * sum(map(abs, t)) / len(t):5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
