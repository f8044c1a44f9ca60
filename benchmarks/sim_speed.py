"""How fast the twin simulates: one simulated hour of the default scenario.

    python benchmarks/sim_speed.py [--duration 3600]

The default scenario (CloudMatrix384, DeepSeek-R1, 6 x EP32 prefill + 1 x EP320 decode) run
closed-loop with enough clients to saturate it: ~15,000 live sequences per decode step and
hundreds of thousands of requests per simulated hour. Prints simulated seconds per wall
second and requests per wall second. Target: an hour in under 60 s on one core.
"""

import argparse
import time

from cloudmatrix.sim.scenario import load_scenario
from cloudmatrix.sim.simulation import Simulation

ap = argparse.ArgumentParser()
ap.add_argument("--duration", type=float, default=3600.0)
args = ap.parse_args()

# enough requests that the clients never run out within the hour
sc = load_scenario("default", {"duration": args.duration, "warmup": 60.0, "workload.num_requests": 2_000_000})
t0 = time.perf_counter()
sim = Simulation(sc)
t_build = time.perf_counter() - t0
res = sim.run()
wall = time.perf_counter() - t0
s = res.summary
done = int(res.records.finished.sum())
print(f"simulated           {res.end_time:10.0f} s")
print(f"wall                {wall:10.2f} s  (set-up {t_build:.2f} s)")
print(f"sim s per wall s    {res.end_time / wall:10.1f}")
print(f"requests finished   {done:10,d}  ({done / wall:,.0f} per wall second)")
dec = s["pools"]["decode"]
print(f"decode steps        {dec['steps']:10,d}  mean batch/die {dec['mean_batch_per_die']:.1f}")
print(f"prefill batches     {s['pools']['prefill']['steps']:10,d}")
