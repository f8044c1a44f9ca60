"""--side-by-side: the row -> aiconfigurator arguments, and the one-line error without the package."""

import sys

import pytest
from silicon_rows import agg, disagg, write

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.validate.aic_estimate import estimate_kwargs, require_aic
from cloudmatrix.validate.silicon_csv import read_rows


def test_agg_row_arguments(tmp_path):
    (r,) = read_rows(write(tmp_path / "s.csv", [agg("a", tp=1, dp=8, moe_tp=1, ep=8, batch=16, isl=8192, osl=1024)]))
    kw = estimate_kwargs(r)
    assert kw["mode"] == "agg" and kw["system_name"] == "h200_sxm" and kw["backend_name"] == "trtllm"
    assert (kw["tp_size"], kw["attention_dp_size"], kw["moe_tp_size"], kw["moe_ep_size"]) == (1, 8, 1, 8)
    assert (kw["batch_size"], kw["isl"], kw["osl"]) == (16, 8192, 1024)
    assert kw["model_path"] == "deepseek-ai/DeepSeek-R1" and kw["gemm_quant_mode"] == "fp8"


def test_disagg_row_arguments(tmp_path):
    row = disagg("d", p_workers=3, p=(1, 4, 1, 4), d_workers=2, d=(8, 1, 2, 4), d_batch=24)
    (r,) = read_rows(write(tmp_path / "s.csv", [row]))
    kw = estimate_kwargs(r)
    assert kw["mode"] == "disagg"
    assert (kw["prefill_num_workers"], kw["prefill_attention_dp_size"], kw["prefill_moe_ep_size"]) == (3, 4, 4)
    assert (kw["decode_num_workers"], kw["decode_tp_size"], kw["decode_moe_tp_size"]) == (2, 8, 2)
    assert kw["decode_batch_size"] == 24 and kw["prefill_batch_size"] == 1
    assert "batch_size" not in kw and "tp_size" not in kw


def test_missing_aiconfigurator_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "aiconfigurator.cli.api", None)  # makes the import fail
    with pytest.raises(CloudMatrixError, match="pip install aiconfigurator"):
        require_aic()


def test_estimates_are_cached_by_their_arguments(tmp_path, monkeypatch):
    from cloudmatrix.validate import aic_estimate as A
    from cloudmatrix.validate.silicon import run_silicon
    from cloudmatrix.validate.silicon_csv import deduplicate

    monkeypatch.setenv("CLOUDMATRIX_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake(row):
        calls.append(row.id)
        return {"ttft": 0.5, "tpot": 0.02 + len(calls) / 1000}, ""

    monkeypatch.setattr(A, "aic_estimate", fake)
    rows = [agg("a", conc=2, batch=1, isl=128, osl=8), agg("b", conc=2, batch=1, isl=128, osl=16, tpot=25.0),
            disagg("incomplete", p_workers=None, d_workers=None)]  # fmt: skip
    ms = deduplicate(read_rows(write(tmp_path / "s.csv", rows)))
    ms = [m for m in ms if m.id in ("a", "incomplete")] + [m for m in ms if m.id == "b"]
    first = run_silicon(ms, workers=1, side_by_side=True)
    assert sorted(calls) == ["a", "b"]  # the incomplete row is never sent to AIC
    again = run_silicon(ms, workers=1, side_by_side=True)
    assert sorted(calls) == ["a", "b"]  # answered from the cache
    assert [r.reference for r in again] == [r.reference for r in first]
    assert next(r for r in again if r.id == "incomplete").reference_note == "layout incomplete in the CSV"
