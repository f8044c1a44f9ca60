"""How fast the twin simulates: simulated seconds per wall second, on one core.

    OMP_NUM_THREADS=1 python benchmarks/sim_speed.py [--duration 3600] [--baseline REV]

Runs one simulated hour of the default scenario (CloudMatrix384, DeepSeek-R1, 6 x EP32 prefill +
1 x EP320 decode at the 150 requests/s it sustains) and of `paper-saturation` (the same deployment
under 16,000 closed-loop clients: ~15,000 live sequences per decode step; the default before the
healthy one replaced it). Each run goes on past the hour until the window's requests finish (the
drain); simulated time counts the drain.

--baseline REV also runs the tree of git revision REV, or a source directory given as a path (its own
scenario named by --baseline-scenario, default `default`, which was the saturation study before the
healthy default) in a subprocess on the same machine in the same session, and prints the ratio: the
before/after figure, like for like in run state. Target: >= 360 simulated s per wall s on the default
scenario (an hour in 10 s). Each run also prints simulated s per CPU second of its process: on a shared
machine the wall clock counts the time the process waited for a core, the CPU clock does not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

WORKER = r"""
import json, sys, time
from cloudmatrix.sim.runtime import Simulation  # the name both old and new trees export
from cloudmatrix.sim.scenario import load_scenario
name, duration, requests = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
sc = load_scenario(name, {"duration": duration, "warmup": 60.0, "workload.num_requests": requests})
t0, c0 = time.perf_counter(), time.process_time()
sim = Simulation(sc)
setup = time.perf_counter() - t0
res = sim.run()
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
s = res.summary
simulated = float(s.get("drained_to_s", res.end_time))
def total(pool):  # every step run, drain included (newer trees count only the window's in the summary)
    return len(sim.step_start[pool]) if hasattr(sim, "step_start") else s["pools"][pool]["steps"]
print(json.dumps({"scenario": name, "simulated_s": simulated, "horizon_s": res.end_time, "wall_s": wall, "cpu_s": cpu,
                  "setup_s": setup, "finished": int(res.records.finished.sum()),
                  "decode_steps": total("decode"), "prefill_batches": total("prefill")}))
"""


def run(src: Path, name: str, duration: float, requests: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", WORKER, name, str(duration), str(requests)],
                         env=env, capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def tree_at(rev: str, into: Path) -> Path:
    repo = Path(__file__).resolve().parents[1]
    archive = into / "src.tar"
    subprocess.run(["git", "-C", str(repo), "archive", "-o", str(archive), rev, "src"], check=True)
    with tarfile.open(archive) as t:
        t.extractall(into, filter="data")
    return into / "src"


def show(r: dict) -> None:
    print(f"{r['scenario']:<28} simulated {r['simulated_s']:7.0f} s (horizon {r['horizon_s']:.0f} s) in "
          f"{r['wall_s']:6.2f} s wall (set-up {r['setup_s']:.2f} s): {r['simulated_s'] / r['wall_s']:6.1f} sim s "
          f"per wall s, {r['simulated_s'] / r['cpu_s']:6.1f} per CPU s; {r['finished']:,} requests, "
          f"{r['decode_steps']:,} decode steps, "
          f"{r['prefill_batches']:,} prefill batches")  # fmt: skip


def rate(r: dict) -> float:
    return r["simulated_s"] / r["wall_s"]


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=3600.0)
    ap.add_argument(
        "--baseline",
        help="git revision to compare against, or a directory holding a `cloudmatrix` package tree (runs it in a "
        "subprocess)",
    )
    ap.add_argument("--baseline-scenario", default="default")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each, interleaved; the best counts")
    ap.add_argument(
        "--against",
        default="paper-saturation",
        help="the scenario of this tree that matches the baseline's (the old default was the saturation study)",
    )
    args = ap.parse_args()
    here = Path(__file__).resolve().parents[1] / "src"
    # enough requests that arrivals (150/s) or clients never run out within the hour and its drain
    requests = int(200 * args.duration * 1.5)
    with tempfile.TemporaryDirectory() as d:
        if args.baseline and Path(args.baseline).is_dir():  # a tree on disk (e.g. this one with files reverted)
            base_src = Path(args.baseline).resolve()
        else:
            base_src = tree_at(args.baseline, Path(d)) if args.baseline else None
        best: dict[str, dict] = {}
        for _ in range(args.repeat):  # interleaved, so a change in machine load hits both alike
            runs = [(n, here, n) for n in ("default", "paper-saturation")]
            if base_src is not None:
                runs.append((f"{args.baseline_scenario} @ {args.baseline}", base_src, args.baseline_scenario))
            for label, src, name in runs:
                r = run(src, name, args.duration, requests)
                r["scenario"] = label
                if label not in best or rate(r) > rate(best[label]):
                    best[label] = r
    for r in best.values():
        show(r)
    if args.baseline:
        base = best[f"{args.baseline_scenario} @ {args.baseline}"]
        same = args.against
        new = best[same]
        print(
            f"{same} vs {base['scenario']}: {rate(new) / rate(base):.2f}x sim s per wall s, "
            f"{base['cpu_s'] / base['simulated_s'] * new['simulated_s'] / new['cpu_s']:.2f}x per CPU s, "
            f"{(new['decode_steps'] / new['wall_s']) / (base['decode_steps'] / base['wall_s']):.2f}x decode steps "
            "per wall s"
        )
