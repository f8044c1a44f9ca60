"""Build small silicon_sample-format CSVs for the tests (the real one ships with aiconfigurator-core)."""

from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = [
    "id",
    "silicon_data_source",
    "backend",
    "backend_version",
    "model_path",
    "system",
    "precision",
    "mode",
    "isl",
    "osl",
    "gemm_quant_mode",
    "moe_quant_mode",
    "batch_size",
    "tp_size",
    "pp_size",
    "attention_dp_size",
    "moe_tp_size",
    "moe_ep_size",
    "prefill_batch_size",
    "prefill_num_workers",
    "prefill_tp_size",
    "prefill_pp_size",
    "prefill_attention_dp_size",
    "prefill_moe_tp_size",
    "prefill_moe_ep_size",
    "decode_batch_size",
    "decode_num_workers",
    "decode_tp_size",
    "decode_pp_size",
    "decode_attention_dp_size",
    "decode_moe_tp_size",
    "decode_moe_ep_size",
    "silicon_ttft_ms",
    "silicon_tpot_ms",
]


def agg(id, *, conc=64, tp=1, dp=8, moe_tp=1, ep=8, batch=8, ttft=500.0, tpot=20.0, source="db-dump/2026-04-27",
        system="h200_sxm", model="deepseek-ai/DeepSeek-R1", isl=1024, osl=1024, precision="fp8"):  # fmt: skip
    return {
        "id": id,
        "silicon_data_source": f"{source}; silicon_concurrency={conc}" if conc is not None else source,
        "backend": "trtllm", "backend_version": "1.0", "model_path": model, "system": system,
        "precision": precision, "mode": "agg", "isl": isl, "osl": osl, "gemm_quant_mode": precision,
        "moe_quant_mode": precision, "batch_size": batch, "tp_size": tp, "pp_size": 1, "attention_dp_size": dp,
        "moe_tp_size": moe_tp, "moe_ep_size": ep, "silicon_ttft_ms": ttft, "silicon_tpot_ms": tpot,
    }  # fmt: skip


def disagg(id, *, conc=256, p_workers=2, p=(1, 8, 1, 8), d_workers=1, d=(1, 8, 1, 8), d_batch=32, ttft=800.0,
           tpot=30.0, source="db-dump/2026-04-27", system="h200_sxm", isl=1024, osl=1024):  # fmt: skip
    """p and d: (tp, attention_dp, moe_tp, moe_ep) of the prefill and decode workers."""
    row = {
        "id": id, "silicon_data_source": f"{source}; silicon_concurrency={conc}", "backend": "sglang",
        "backend_version": "0.5", "model_path": "deepseek-ai/DeepSeek-V3", "system": system, "precision": "fp8",
        "mode": "disagg", "isl": isl, "osl": osl, "gemm_quant_mode": "fp8", "moe_quant_mode": "fp8",
        "prefill_batch_size": 1 if p_workers is not None else "", "prefill_num_workers": p_workers or "",
        "decode_batch_size": d_batch if d_workers is not None else "", "decode_num_workers": d_workers or "",
        "silicon_ttft_ms": ttft, "silicon_tpot_ms": tpot,
    }  # fmt: skip
    for prefix, (tp, dp, moe_tp, ep) in (("prefill_", p), ("decode_", d)):
        row.update({f"{prefix}tp_size": tp, f"{prefix}pp_size": 1, f"{prefix}attention_dp_size": dp,
                    f"{prefix}moe_tp_size": moe_tp, f"{prefix}moe_ep_size": ep})  # fmt: skip
    return row


def write(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in COLUMNS})
    return path
