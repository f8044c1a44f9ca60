"""How fast the cost model is: calls per second of the decode and prefill step models.

    python benchmarks/perf_step.py

A planner sweeps many deployments and the simulator costs every step, so a decode step
must cost well under a millisecond of CPU time.
"""

import time

from cloudmatrix.perf import Deployment, decode_step, prefill_step
from cloudmatrix.specs.hardware import load_system
from cloudmatrix.specs.model import load_model


def rate(fn, seconds: float = 2.0) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


model, system = load_model("deepseek-r1"), load_system("cloudmatrix384")
dec = Deployment(dies=320, shared_expert_dies=32, redundant_experts=32, microbatches=2, mtp_depth=1, mtp_acceptance=0.7)
pre = Deployment(dies=32, redundant_experts=32, microbatches=2, mtp_depth=1, mtp_acceptance=0.7)
r_dec = rate(lambda: decode_step(model, system, dec, 48, 4096))
r_pre = rate(lambda: prefill_step(model, system, pre, 8192, 4096))
print(f"decode step model : {r_dec:10,.0f} calls/s  ({1e6 / r_dec:6.1f} us per call)")
print(f"prefill step model: {r_pre:10,.0f} calls/s  ({1e6 / r_pre:6.1f} us per call)")
