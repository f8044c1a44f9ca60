"""Peak memory of `cloudmatrix simulate --csv` on a two-simulated-hour run (issue 14, defect 13).

    OMP_NUM_THREADS=1 python benchmarks/sim_csv_memory.py [--duration 7200]

Runs the CLI in a subprocess (the default scenario, 150 requests/s, enough requests for the
duration and its drain) and reads the child's peak resident set size (ru_maxrss) when it exits,
with and without --csv, so the CSV writer's share is the difference. Goal: under 300 MB with --csv.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_mb(args: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cloudmatrix.cli.main", *args], check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the largest child so far (kB on Linux): run the bigger case last
    return max(after, before) / 1024, wall


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=7200.0)
    a = ap.parse_args()
    requests = int(150 * a.duration * 1.3)
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
