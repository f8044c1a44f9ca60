"""The silicon suite: every deduplicated DeepSeek point of aiconfigurator-core's measured set, run
through the twin the way it was measured (closed loop at the row's concurrency), in a process pool."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.validate.rows import ValidationRow
from cloudmatrix.validate.silicon_csv import Measurement
from cloudmatrix.validate.silicon_translate import (
    SIM_FAILED,
    TWIN_SYSTEMS,
    Refused,
    Translation,
    classify,
    measured_cold,
    translate,
)


def slice_of(m: Measurement) -> str:
    r = m.row
    return f"{r.system} {r.backend} {r.mode}"


def base_row(m: Measurement) -> ValidationRow:
    r = m.row
    return ValidationRow(
        suite="silicon",
        id=r.id,
        slice=slice_of(m),
        # end-to-end measurements never set a parameter (kernel tables calibrate; docs/calibration.md)
        tag="validation",
        conditions=(
            f"{r.model} {r.precision} {r.isl}/{r.osl} c{r.concurrency} {r.describe_layout()}"
            + (f"; median of {m.repeats} measurements" if m.repeats > 1 else "")
            + ("; layout read back from the run id (the CSV's copy counts its GPUs twice)" if r.layout_from_id else "")
            + (
                f"; measured {r.measured_on}, before the client's warm-up requests: its means include the server's"
                " first-use costs, which the twin does not model"
                if measured_cold(r)
                else ""
            )
        ),
        measured={"ttft": m.ttft_s, "tpot": m.tpot_s},
        source=f"aiconfigurator-core silicon_sample.csv ids {', '.join(m.ids)}",
    )


def aic_can_take(m: Measurement) -> bool:
    return m.row.complete and m.row.concurrency is not None


def predict(m: Measurement, side_by_side: bool = False, aic: tuple | None = None) -> ValidationRow:
    """Simulate one measured point; a refusal (with its reason) when the twin cannot express it.
    With `side_by_side`, AIC's own estimate of the same point too (on every row it can take);
    `aic` is that estimate when already known."""
    row = base_row(m)
    if side_by_side:
        if not aic_can_take(m):
            row.reference_note = "layout incomplete in the CSV"
        elif aic is not None:
            row.reference, row.reference_note = aic
        else:
            from cloudmatrix.validate.aic_estimate import aic_estimate

            row.reference, row.reference_note = aic_estimate(m.row)
    return _twin(m, row)


def _predict(args: tuple) -> ValidationRow:
    return predict(*args)


class Unfinished(Exception):
    """Some request the client counts did not finish in the simulation."""


def simulate(tr: Translation) -> tuple[float, float]:
    """Mean TTFT and TPOT (s) over the requests the client counts; CloudMatrixError from the twin, or Unfinished."""
    from cloudmatrix.sim.simulation import run_scenario

    rec = run_scenario(tr.scenario).records
    sel = slice(tr.measure_from, tr.measure_to)
    ttft, tpot = np.asarray(rec.ttft)[sel], np.asarray(rec.tpot)[sel]
    if np.isnan(ttft).any() or np.isnan(tpot).any():
        raise Unfinished("some measured requests did not finish")
    return float(ttft.mean()), float(tpot.mean())


def _twin(m: Measurement, row: ValidationRow) -> ValidationRow:
    t0 = time.perf_counter()
    try:
        tr = translate(m)
    except Refused as e:
        row.refused, row.detail = e.reason, e.detail
        return row
    row.deployment, row.route = tr.deployment, "simulation"
    try:
        ttft, tpot = simulate(tr)
    except CloudMatrixError as e:
        row.refused, row.detail = classify(str(e)), str(e)
        return row
    except Unfinished as e:
        row.refused, row.detail = SIM_FAILED, str(e)
        return row
    except Exception as e:  # a twin bug on one row: counted and shown, not allowed to sink the whole suite
        row.refused, row.detail = SIM_FAILED, f"{type(e).__name__}: {e}"
        return row
    row.predicted = {"ttft": ttft, "tpot": tpot}
    row.wall_s = time.perf_counter() - t0
    return row


def _init_worker() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_silicon(
    measurements: Iterable[Measurement],
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    side_by_side: bool = False,
) -> list[ValidationRow]:
    """Predict every point, in the order given; `workers` processes (1: in this process)."""
    ms = list(measurements)
    workers = workers or os.cpu_count() or 1
    cache = None
    if side_by_side:
        from cloudmatrix.validate.aic_estimate import EstimateCache

        cache = EstimateCache.default()
    jobs = [(m, side_by_side, cache.get(m.row) if cache is not None and aic_can_take(m) else None) for m in ms]
    fresh = 0

    def keep(job: tuple, r: ValidationRow) -> None:
        nonlocal fresh
        if cache is not None and job[2] is None and aic_can_take(job[0]):
            cache.put(job[0].row, (r.reference, r.reference_note))
            fresh += 1
            if fresh % 20 == 0:  # a stopped run keeps most of what AIC computed
                cache.save()

    if workers == 1 or len(ms) <= 1:
        out = _collect(map(_predict, jobs), jobs, keep, progress)
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
            # in the order of the file, so that results are reproducible
            out = _collect(pool.map(_predict, jobs, chunksize=1), jobs, keep, progress)
    if cache is not None:
        cache.save()
    return out


def _collect(results: Iterable[ValidationRow], jobs: list[tuple], keep, progress) -> list[ValidationRow]:
    out = []
    for job, r in zip(jobs, results, strict=True):
        keep(job, r)
        out.append(r)
        if progress:
            progress(len(out), len(jobs))
    return out


def systems_filter(ms: list[Measurement], system: str | None) -> list[Measurement]:
    """Points of one system, named the CSV's way (h200_sxm) or the twin's (hgx-h200)."""
    if system is None:
        return ms
    keep = [m for m in ms if system in (m.row.system, TWIN_SYSTEMS.get(m.row.system))]
    if not keep:
        known = sorted({m.row.system for m in ms})
        raise CloudMatrixError(f"no silicon rows on system {system!r}; the set has {', '.join(known)}")
    return keep
