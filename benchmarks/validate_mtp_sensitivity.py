"""What the refused MTP silicon rows would give under MTP: a sensitivity to the acceptance, never a validation figure.

    OMP_NUM_THREADS=1 python benchmarks/validate_mtp_sensitivity.py [--workers 2] [--limit N] [--rows]

The B200 TensorRT-LLM rows on image 1.2.0rc6.post3 are MTP runs (validate/silicon_csv.py `MTP_IMAGES`), refused by
the silicon suite (silicon_translate.MTP_RUN) because the CSV does not record how many drafts the target model
accepted on the client's random prompts. This script runs each of them, in one run:

- baseline: the twin without MTP, as the suite ran these rows before it refused them (the row read as the plain
  config's image 1.2.0rc6.post2, so silicon_recipes.py's dsr1_fp{4,8}_b200_trt.sh serving configuration);
- for each acceptance a in ACCEPTANCES: the same scenario with the MTP recipe's settings, InferenceMAX
  benchmarks/dsr1_fp8_b200_trt_mtp.sh @5d517074 (2026-02-05) and dsr1_fp4_b200_trt_mtp.sh @0aae52d4 (2026-02-06),
  the commits just before the rows' measurement times (mirror github.com/ajith-sirra-amd/InferenceMAX_Rocm_Team):
  speculative_config decoding_type MTP, num_nextn_predict_layers MTP = 3, or 1 with DP_ATTENTION=true;
  MAX_BATCH_SIZE = CONC, with DP attention CONC/8 (FP8) or CONC/4 (FP4) when CONC >= 8 (4);
  --max_num_tokens = ceil(((MTP + 1) x MAX_BATCH_SIZE + ISL + 64) / 64) x 64 per rank (not the plain script's
  max(8192, ...)); no batch_wait_timeout_iters (the MTP scripts never set DELAY_BATCHING).

The twin's acceptance (sim/scenario.py [mtp], perf/deployment.py `Deployment.tokens_per_step`, sim/serving_sim.py
`_tokens_per_seq`) is per draft and chained: each of the `depth` drafts is accepted with probability a given that
all earlier ones were, and drafts are accepted in order until the first rejection, so a step gains
1 + a + a^2 + ... + a^depth tokens per sequence on average (depth 3: 1.88 at a = 0.5, 3.44 at a = 0.9; depth 1:
1 + a). It is not TensorRT-LLM's "acceptance rate" as accepted / drafted tokens, nor the acceptance length; the
table prints the tokens per step each a implies so a measured acceptance length can be placed on it.

Errors are predicted / measured - 1 on mean TTFT and TPOT (validate/accuracy.py); MAPE and signed median over the
rows each setting predicts. Needs the validate extra (aiconfigurator-core's CSV).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

os.environ.setdefault("OMP_NUM_THREADS", "1")

from cloudmatrix.errors import CloudMatrixError  # noqa: E402
from cloudmatrix.validate.silicon import Unfinished, simulate  # noqa: E402
from cloudmatrix.validate.silicon_csv import Measurement, SiliconRow  # noqa: E402
from cloudmatrix.validate.silicon_translate import SIM_FAILED, Refused, Translation, translate  # noqa: E402

ACCEPTANCES = (0.5, 0.6, 0.7, 0.8, 0.9)
MTP_IMAGE, PLAIN_IMAGE = "1.2.0rc6.post3", "1.2.0rc6.post2"  # the MTP configs' image; the plain configs'
BASELINE = "no MTP (plain recipe)"


@dataclass(frozen=True)
class Outcome:
    acceptance: float | None  # None: the baseline
    ttft: float | None = None  # predicted means, s
    tpot: float | None = None
    refused: str = ""


def mtp_depth(row: SiliconRow) -> int:
    """num_nextn_predict_layers of the MTP scripts: 3, or 1 with DP attention."""
    return 1 if (row.agg.attention_dp or 1) > 1 else 3  # type: ignore[union-attr]


def mtp_step_tokens(row: SiliconRow, depth: int) -> int:
    """The MTP scripts' --max_num_tokens, per attention-DP rank."""
    conc = row.concurrency or 1
    batch = conc
    if (row.agg.attention_dp or 1) > 1:  # type: ignore[union-attr]
        div = 8 if row.precision == "fp8" else 4
        batch = conc if conc < div else conc // div
    return ((depth + 1) * batch + row.isl + 64 + 63) // 64 * 64


def plain_copy(m: Measurement) -> Measurement:
    """The row as the plain (non-MTP) config's image would have recorded it: what the suite ran before refusing."""
    r = m.row
    if not r.mtp_run or r.mode != "agg" or r.agg is None:
        raise CloudMatrixError(f"{r.id}: not an aggregated MTP run; this sensitivity covers the MTP_IMAGES rows only")
    src = r.source.replace(MTP_IMAGE, PLAIN_IMAGE)
    row = replace(r, backend_version=r.backend_version.replace(MTP_IMAGE, PLAIN_IMAGE), source=src)
    if row.mtp_run:
        raise CloudMatrixError(f"{r.id}: still read as an MTP run after the image swap; update MTP_IMAGE")
    return replace(m, row=row)


def scenario(m: Measurement, acceptance: float | None) -> Translation:
    """The baseline translation (acceptance None) or the MTP recipe's scenario at this per-draft acceptance."""
    from cloudmatrix.sim.scenario import Scenario

    tr = translate(plain_copy(m))
    if acceptance is None:
        return tr
    row = m.row
    depth = mtp_depth(row)
    data = tr.scenario.model_dump()
    pool = data["colocated"]
    dp = row.agg.attention_dp or 1  # type: ignore[union-attr]
    # per-rank step tokens -> per die, as silicon_translate._pool does
    pool["tokens_per_die"] = max(1, math.ceil(mtp_step_tokens(row, depth) * dp / pool["dies"]))
    pool["batch_wait_iters"] = pool["batch_wait_ratio"] = None
    data["mtp"] = {"depth": depth, "acceptance": acceptance}
    sc = Scenario.model_validate(data)
    sc.check()
    return replace(tr, scenario=sc, deployment=f"{tr.deployment}; MTP depth {depth} @ {acceptance:g} per draft")


def predict(m: Measurement, acceptance: float | None) -> Outcome:
    """Mean TTFT and TPOT over the requests the client counts, taken as validate/silicon.py takes them."""
    try:
        ttft, tpot = simulate(scenario(m, acceptance))
    except (Refused, CloudMatrixError, Unfinished) as e:
        return Outcome(acceptance, refused=str(e))
    except Exception as e:  # a twin bug on one row: shown, not allowed to sink the run (as validate/silicon.py)
        return Outcome(acceptance, refused=f"{SIM_FAILED}: {type(e).__name__}: {e}")
    return Outcome(acceptance, ttft, tpot)


def _predict(job: tuple[Measurement, float | None]) -> Outcome:
    return predict(*job)


def sensitivity(
    ms: Sequence[Measurement], acceptances: Iterable[float] = ACCEPTANCES, workers: int = 2
) -> list[list[Outcome]]:
    """For each row, its baseline outcome followed by one per acceptance, in the order given."""
    settings: list[float | None] = [None, *acceptances]
    jobs = [(m, a) for m in ms for a in settings]
    if workers <= 1 or len(jobs) <= 1:
        flat = list(map(_predict, jobs))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            flat = list(pool.map(_predict, jobs, chunksize=1))
    k = len(settings)
    return [flat[i : i + k] for i in range(0, len(flat), k)]


def errors(ms: Sequence[Measurement], out: list[list[Outcome]], j: int, metric: str) -> list[float]:
    pairs = zip(ms, out, strict=True)
    return [getattr(o[j], metric) / getattr(m, f"{metric}_s") - 1 for m, o in pairs if not o[j].refused]


def label(acceptance: float | None) -> str:
    if acceptance is None:
        return BASELINE
    e3, e1 = (sum(acceptance**i for i in range(d + 1)) for d in (3, 1))
    return f"MTP a={acceptance:.1f} ({e3:.2f} tok/step d3, {e1:.2f} d1)"


def report(ms: Sequence[Measurement], out: list[list[Outcome]], rows: bool) -> None:
    settings = [o.acceptance for o in out[0]]
    print(f"{len(ms)} MTP rows (B200 TensorRT-LLM {MTP_IMAGE}); errors = predicted / measured - 1")
    print(f"{'setting':42s} {'n':>3s} {'TPOT MAPE':>9s} {'TPOT med':>9s} {'TTFT MAPE':>9s} {'TTFT med':>9s}")
    for j, a in enumerate(settings):
        tp, tt = errors(ms, out, j, "tpot"), errors(ms, out, j, "ttft")
        if not tp:
            print(f"{label(a):42s}   0 (every row refused)")
            continue
        mape = [100 * statistics.mean(map(abs, e)) for e in (tp, tt)]
        med = [100 * statistics.median(e) for e in (tp, tt)]
        print(f"{label(a):42s} {len(tp):3d} {mape[0]:8.1f}% {med[0]:+8.1f}% {mape[1]:8.1f}% {med[1]:+8.1f}%")
    refused = {o.refused for o in (x for r in out for x in r) if o.refused}
    for reason in sorted(refused):
        print(f"  refused: {reason}")
    if rows:
        head = " ".join(f"{'base' if a is None else f'a={a:.1f}':>13s}" for a in settings)
        print(f"\nTPOT / TTFT error per row, %\n{'row':44s} {'d':>1s} {'TPOT ms':>7s} {'TTFT ms':>7s} {head}")
        for m, o in zip(ms, out, strict=True):
            r = m.row
            cells = " ".join(
                f"{'refused':>13s}" if x.refused
                else f"{100 * (x.tpot / m.tpot_s - 1):+6.0f}/{100 * (x.ttft / m.ttft_s - 1):+6.0f}"
                for x in o
            )  # fmt: skip
            name = f"{r.precision} {r.isl}/{r.osl} c{r.concurrency} tp{r.agg.tp} dp{r.agg.attention_dp}"  # type: ignore[union-attr]
            print(f"{name:44s} {mtp_depth(r)} {1e3 * m.tpot_s:7.2f} {1e3 * m.ttft_s:7.0f} {cells}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="only the first N MTP rows")
    ap.add_argument("--rows", action="store_true", help="print every row's errors")
    args = ap.parse_args(argv)

    from cloudmatrix.validate.silicon_csv import load_silicon_set

    ms = [m for m in load_silicon_set().measurements if m.row.mtp_run]
    if args.limit is not None:
        ms = ms[: args.limit]
    report(ms, sensitivity(ms, ACCEPTANCES, args.workers), args.rows)


if __name__ == "__main__":
    main()
