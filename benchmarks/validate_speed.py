"""How fast the silicon suite runs: points per wall second, one process against a pool, in one run.

    OMP_NUM_THREADS=1 python benchmarks/validate_speed.py [--points 40] [--workers 2]

Takes the first N points that the twin can express (refused points cost nothing), runs them in this
process (the baseline) and then in a pool of --workers processes, and prints both wall times and
their ratio. The whole suite must stay under 10 minutes on 2 cores (issue 9): multiply the per-point
time by the number of predicted points that `cloudmatrix validate --suite silicon` reports.
Needs the validate extra (aiconfigurator-core's CSV).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from cloudmatrix.validate.silicon import run_silicon
    from cloudmatrix.validate.silicon_csv import load_silicon_set
    from cloudmatrix.validate.silicon_translate import Refused, translate

    points = []
    for m in load_silicon_set().measurements:
        try:
            translate(m)
        except Refused:
            continue
        points.append(m)
        if len(points) == args.points:
            break
    t0 = time.perf_counter()
    serial = run_silicon(points, workers=1)
    t_serial = time.perf_counter() - t0
    t0 = time.perf_counter()
    pooled = run_silicon(points, workers=args.workers)
    t_pool = time.perf_counter() - t0
    same = all(a.predicted == b.predicted and a.refused == b.refused for a, b in zip(serial, pooled, strict=True))
    print(f"{len(points)} expressible points")
    print(f"baseline, 1 process:       {t_serial:7.1f} s  ({t_serial / len(points):.2f} s per point)")
    print(f"pool of {args.workers} processes:      {t_pool:7.1f} s  ({t_pool / len(points):.2f} s per point)")
    print(f"speed-up {t_serial / t_pool:.2f}x; identical predictions: {same}")


if __name__ == "__main__":
    main()
