"""How much of the paper's default-balance prefill gap can a measured expert distribution explain? (issue 10)

CloudMatrix-Infer's prefill with its default expert balance (5,655 tokens/s per NPU) is 18% below its
perfect-balance figure (6,688); the paper publishes neither its expert-load distribution nor the statistics
its placement was computed from. This script takes measured per-layer DeepSeek expert distributions in
SGLang's dump format (`{"logical_count": [[count per expert] per layer]}`, what SGLang's
`/eplb_save_expert_distribution` writes) and runs the paper's prefill scenario (`paper-prefill`: EP32,
8 routed + 1 redundant expert per die, 8,192 tokens per die per step) with

- the placement computed from the served traffic's own statistics (EPLB as deployed on a matched workload);
- the placement computed from each other file's statistics, serving the first file's traffic (a placement
  recorded on other traffic: another prompt length, or decode).

It prints the step's expert imbalance (mean over the MoE layers of the busiest die / mean die) and the cost
model's prefill tokens/s per NPU with the paper's figure beside it. Validation only: nothing here changes a
parameter, and the scenario the paper suite runs keeps uniform popularity (the paper's own distribution is
unpublished). The figures recorded in docs/accuracy.md used the SGLang team's published DeepSeek-V3
statistics (attached to sgl-project/sglang#6017; mirrored at github.com/GeneratedRandomly/SGLang-reproduce,
attachment_ep_statistics/, commit c79682c):

    python benchmarks/validate_expert_placement.py prefill_in4096.json prefill_in2048.json \\
        prefill_in1024.json prefill_in512.json decode_in1000out1000.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf import prefill_step
from cloudmatrix.sim.costs import PoolCosts
from cloudmatrix.sim.scenario import load_scenario
from cloudmatrix.validate.paper import PUBLISHED

PROMPT = 4096  # the paper's prefill prompts (validate/paper.py runs the same operating point)


def prefill(served: str | None, placed: str | None) -> tuple[float, float]:
    """(step imbalance, cost-model prefill tokens/s per NPU) of the paper's prefill with these statistics."""
    over: dict = {}  # absolute paths: a scenario resolves relative ones against its own folder
    if served is not None:
        over = {"experts.popularity": "file", "experts.path": str(Path(served).resolve())}
    if placed is not None:
        over["experts.placement_path"] = str(Path(placed).resolve())
    sc = load_scenario("paper-prefill", over)
    system, model = sc.check()
    costs = PoolCosts(model, system, sc.deployment(sc.prefill, model), sc.experts)
    imbalance = costs.imbalance(sc.prefill.tokens_per_die)
    b = prefill_step(model, system, costs.dep, sc.prefill.tokens_per_die, PROMPT)
    return imbalance, b.tokens_per_s_per_chip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("served", help="per-layer expert distribution of the served traffic (SGLang JSON dump)")
    ap.add_argument("placed_from", nargs="*", help="distributions a placement may have been computed from instead")
    args = ap.parse_args()
    for f in [args.served, *args.placed_from]:
        if not Path(f).is_file():
            print(f"error: {f} does not exist; give SGLang expert-distribution JSON files", file=sys.stderr)
            return 2
    published = PUBLISHED["prefill_default"]
    print(f"paper prefill, default balance: published {published:,.0f} tokens/s per NPU")
    print(f"{'traffic':28s} {'placement from':28s} {'imbalance':>9s} {'tokens/s/NPU':>13s} {'vs paper':>9s}")
    rows = [(None, None, "uniform (paper suite)", "uniform")]
    rows += [(args.served, None, Path(args.served).name, "the same")]
    rows += [(args.served, p, Path(args.served).name, Path(p).name) for p in args.placed_from]
    t0 = time.perf_counter()
    try:
        for served, placed, a, b in rows:
            imb, tps = prefill(served, placed)
            print(f"{a:28s} {b:28s} {imb:9.3f} {tps:13,.0f} {tps / published - 1:+9.1%}")
    except CloudMatrixError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
