"""aiconfigurator's own estimate of a measured silicon point, for `validate --side-by-side`.

Calls `aiconfigurator.cli.api.cli_estimate` (AIC 0.12's programmatic `aiconfigurator cli estimate`)
with the row's system, backend, mode, ISL/OSL, quantisation and layout: batch and TP/DP/MoE
widths for `agg`, per-pool widths, batch and worker counts for `disagg`. AIC picks its latest
database version for the backend and infers the KV-cache and attention precisions itself; MTP
off (nextn 0), as for the twin. Where AIC has no kernel data for a point it raises, and the row
gets no AIC estimate, with AIC's reason.

AIC takes seconds per point, so its answers are kept in a cache file per AIC version
(`$CLOUDMATRIX_CACHE`, default ~/.cache/cloudmatrix), keyed by the exact arguments: a later run
re-estimates only what it has not seen. Delete the file to start afresh.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.validate.silicon_csv import PoolLayout, SiliconRow

INSTALL_HINT = "pip install aiconfigurator"


def require_aic() -> None:
    """A one-line error unless the `aiconfigurator` package (not only aiconfigurator-core) imports."""
    try:
        import aiconfigurator.cli.api  # noqa: F401
    except ImportError:
        raise CloudMatrixError(
            f"--side-by-side needs NVIDIA's aiconfigurator package for its own estimates; run `{INSTALL_HINT}` "
            "or drop --side-by-side"
        ) from None


def _widths(p: PoolLayout, prefix: str) -> dict[str, Any]:
    return {
        f"{prefix}tp_size": p.tp,
        f"{prefix}pp_size": p.pp or 1,
        f"{prefix}attention_dp_size": p.attention_dp,
        f"{prefix}moe_tp_size": p.moe_tp,
        f"{prefix}moe_ep_size": p.moe_ep,
    }


def estimate_kwargs(row: SiliconRow) -> dict[str, Any]:
    """The cli_estimate arguments that describe this row."""
    kw: dict[str, Any] = {
        "model_path": row.model,
        "system_name": row.system,
        "mode": row.mode,
        "backend_name": row.backend,
        "isl": row.isl,
        "osl": row.osl,
        "gemm_quant_mode": row.gemm_quant or None,
        "moe_quant_mode": row.moe_quant or None,
    }
    if row.mode == "agg":
        assert row.agg is not None
        kw.update(_widths(row.agg, ""), batch_size=row.agg.batch)
    else:
        assert row.prefill is not None and row.decode is not None
        kw.update(_widths(row.prefill, "prefill_"))
        kw.update(_widths(row.decode, "decode_"))
        kw.update(
            prefill_batch_size=row.prefill.batch,
            prefill_num_workers=row.prefill.workers,
            decode_batch_size=row.decode.batch,
            decode_num_workers=row.decode.workers,
        )
    return kw


def aic_estimate(row: SiliconRow) -> tuple[dict[str, float], str]:
    """({'ttft': s, 'tpot': s}, '') or ({}, why AIC gave no estimate)."""
    from aiconfigurator.cli.api import cli_estimate

    kwargs = estimate_kwargs(row)  # outside the try: a mistake here is ours, not AIC's missing data
    logging.disable(logging.WARNING)  # AIC logs every fallback table it loads
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = cli_estimate(**kwargs)
    except Exception as e:  # AIC raises its own error types for missing data; all mean "no estimate"
        return {}, f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    finally:
        logging.disable(logging.NOTSET)
    ttft, tpot = float(r.ttft) / 1e3, float(r.tpot) / 1e3
    if not (ttft > 0 and tpot > 0):
        return {}, f"AIC returned ttft={r.ttft} ms, tpot={r.tpot} ms"
    return {"ttft": ttft, "tpot": tpot}, ""


Estimate = tuple[dict[str, float], str]


class EstimateCache:
    """AIC's answers by their exact arguments, in one JSON file per AIC version."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, list] = {}
        if path.exists():
            try:
                self.entries = json.loads(path.read_text())
            except (OSError, ValueError):
                self.entries = {}  # a damaged cache is only lost time: start afresh

    @classmethod
    def default(cls) -> EstimateCache:
        root = Path(os.environ.get("CLOUDMATRIX_CACHE", Path.home() / ".cache" / "cloudmatrix"))
        try:
            version = metadata.version("aiconfigurator")
        except metadata.PackageNotFoundError:
            version = "unknown"
        return cls(root / f"aic-estimates-{version}.json")

    @staticmethod
    def key(row: SiliconRow) -> str:
        return json.dumps(estimate_kwargs(row), sort_keys=True, default=str)

    def get(self, row: SiliconRow) -> Estimate | None:
        e = self.entries.get(self.key(row))
        return None if e is None else (dict(e[0]), str(e[1]))

    def put(self, row: SiliconRow, estimate: Estimate) -> None:
        self.entries[self.key(row)] = [estimate[0], estimate[1]]

    def save(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.entries))
            tmp.replace(self.path)
        except OSError:
            pass  # no writable cache: the next run estimates again
