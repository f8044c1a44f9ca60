"""How fast the cost model is: decode and prefill step calls per second, this tree against a baseline revision
timed in the same run (the machine is shared, so only same-run ratios mean anything).

    python benchmarks/perf_step.py                      # baseline: the revision before cost model v2
    python benchmarks/perf_step.py --baseline HEAD~3    # any revision; checked out to a temporary worktree

Access patterns, each over 3,000 calls (CPU time of this process, not wall time):
- "sim": a fixed batch at contexts that change every call (the simulator costs the busiest die's
  batch at its current context; a planner sweeps contexts per batch);
- "sweep": batch 1..96 and contexts both varying (repeats every 96 x 512 calls);
- "unique": no two calls share a batch (fractional batches): nothing can be reused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "9883205"  # main before the cost model v2 work (issue 10)

_TIMER = r"""
import json, os, time
os.environ.setdefault("OMP_NUM_THREADS", "1")
from cloudmatrix.perf import Deployment, decode_step, prefill_step
from cloudmatrix.specs.hardware import load_system
from cloudmatrix.specs.model import load_model

model, system = load_model("deepseek-r1"), load_system("cloudmatrix384")
dec = Deployment(dies=320, shared_expert_dies=32, redundant_experts=32, microbatches=2, mtp_depth=1, mtp_acceptance=0.7)
pre = Deployment(dies=32, redundant_experts=32, microbatches=2, mtp_depth=1, mtp_acceptance=0.7)
N = 3000

def rate(fn):
    fn(0)
    t0 = time.process_time()
    for i in range(N):
        fn(i)
    return N / (time.process_time() - t0)

out = {
    "decode sim": rate(lambda i: decode_step(model, system, dec, 48, 1024 + 16 * (i % 512), check_memory=False)),
    "decode sweep": rate(lambda i: decode_step(model, system, dec, 1 + i % 96, 1024 + 16 * (i % 512), False)),
    "decode unique": rate(lambda i: decode_step(model, system, dec, 1 + i % 96 + i * 1e-6, 4096, False)),
    "prefill": rate(lambda i: prefill_step(model, system, pre, 8192, 1024 + 16 * (i % 512), check_memory=False)),
}
print(json.dumps(out))
"""


def _time(src: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _TIMER], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", default=BASELINE, help="git revision to compare with (default: %(default)s)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wt = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(wt), args.baseline],
                       check=True, capture_output=True)
        try:
            base = _time(wt / "src")
            now = _time(ROOT / "src")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(wt)], capture_output=True)
    print(f"{'pattern':16s} {'baseline ' + args.baseline:>20s} {'this tree':>12s} {'ratio':>7s}   (calls/s, CPU time)")
    for k in now:
        print(f"{k:16s} {base[k]:20,.0f} {now[k]:12,.0f} {now[k] / base[k]:6.2f}x")


if __name__ == "__main__":
    main()
