"""Peak memory of `cloudmatrix simulate --csv` on a two-simulated-hour run (issue 14, defect 13).

    OMP_NUM_THREADS=1 python benchmarks/sim_csv_memory.py [--duration 7200]

Runs the CLI in a subprocess (the default scenario, 150 requests/s, enough requests for the
duration and its drain) and reads the child's peak resident set size (its own ru_maxrss, read at exit),
with and without --csv, so the CSV writer's share is the difference. Goal: under 300 MB with --csv.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WRAPPER = """
import atexit, resource, runpy, sys
atexit.register(lambda: sys.stderr.write(f"MAXRSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n"))
sys.argv = ["cloudmatrix", *sys.argv[1:]]
runpy.run_module("cloudmatrix.cli.main", run_name="__main__")
"""


def peak_mb(args: list[str]) -> tuple[float, float]:
    """Peak RSS [MB] of one CLI run in its own process (its own ru_maxrss, read at exit), and wall s."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", WRAPPER, *args], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    kb = int(out.stderr.rsplit("MAXRSS_KB ", 1)[1].split()[0])
    return kb / 1024, wall


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=7200.0)
    a = ap.parse_args()
    # the default draws 150 requests/s: enough for the duration and the drain that follows it
    requests = int(150 * (a.duration + 300))
    common = ["simulate", "default", "--quiet", "--duration", str(a.duration),
              "--set", f"workload.num_requests={requests}"]  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        csv = Path(d) / "requests.csv"
        plain, t_plain = peak_mb(common)
        with_csv, t_csv = peak_mb([*common, "--csv", str(csv)])
        size = csv.stat().st_size / 1e6
    print(f"simulated {a.duration:.0f} s, {requests:,} requests drawn")
    print(f"peak RSS without --csv  {plain:8.0f} MB  ({t_plain:.1f} s wall)")
    print(f"peak RSS with --csv     {with_csv:8.0f} MB  ({t_csv:.1f} s wall), CSV {size:.0f} MB")
    print(f"goal < 300 MB with --csv: {'met' if with_csv < 300 else 'NOT met'}")
