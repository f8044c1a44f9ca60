"""Read aiconfigurator-core's op-level measurements into plain tables (latency in seconds).

The tables live in the installed package under systems/data/<system>/<op>/<backend>/<version>/*.parquet;
aiconfigurator's own loader (compiled, sdk/engine_table_view.py) reads the same files. Columns, as the
package's DeepSeek model (sdk/models/deepseek.py) uses them:

- gemm_perf: gemm_dtype, m, n, k, latency (ms): one (m x k) @ (k x n) GEMM.
- generation_mla_perf / context_mla_perf: num_heads is the heads on one GPU (128 / tp_size), batch_size,
  isl (prompt length; generation rows use isl = 1 and `step` = tokens already in the cache), kv_cache_dtype.
- mla_generation_module_perf: the decode attention module as one measurement (tp_size 1, num_heads = 128 / TP),
  batch_size sequences at `step` cached tokens, gemm_type the projections' precision.
- moe_perf: num_tokens on the EP group, hidden_size, inter_size (whole expert, split by moe_tp_size), topk,
  num_experts (split by moe_ep_size), distribution ("balanced", power laws), moe_dtype.
- scale_matrix_perf: quantising an m x k BF16 matrix to quant_dtype.
- nccl_perf: op_name, num_gpus, message_size in elements of nccl_dtype ("half" = 2 bytes).
- wideep_deepep_normal_perf: DeepEP normal kernels, same columns plus dispatch_sms / combine_sms (SMs given to the
  kernel) and dispatch_transmit_us / combine_transmit_us.
- trtllm_alltoall_perf: TensorRT-LLM's MNNVL all-to-all, op_name alltoall_dispatch / alltoall_combine, kernel_source
  NVLinkOneSided / NVLinkTwoSided, moe_dtype (the dispatched format), moe_ep_size, num_tokens per rank, latency (ms).
- wideep_deepep_ll_perf: DeepEP low-latency kernels, node_num nodes of 8 GPUs (EP = 8 x node_num), num_token per
  rank, num_topk, hidden_size; dispatch_avg_t_us / combine_avg_t_us in microseconds (no `latency` column).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

import pandas as pd

PACKAGE = "aiconfigurator-core"

# One backend/version per op, the same on every system: TensorRT-LLM 1.3.0rc20 for the compute kernels
# (present for all six NVIDIA systems) and NCCL 2.29.2 for collectives.
SOURCES = {
    "gemm": ("gemm", "trtllm", "1.3.0rc20", "gemm_perf.parquet"),
    "mla_generation": ("mla", "trtllm", "1.3.0rc20", "generation_mla_perf.parquet"),
    "mla_context": ("mla", "trtllm", "1.3.0rc20", "context_mla_perf.parquet"),
    # the whole decode attention block (projections, norms, RoPE, attention, o_proj) as one measurement
    "mla_generation_module": ("mla", "trtllm", "1.3.0rc20", "mla_generation_module_perf.parquet"),
    "mla_context_module": ("mla", "trtllm", "1.3.0rc20", "mla_context_module_perf.parquet"),
    "moe": ("moe", "trtllm", "1.3.0rc20", "moe_perf.parquet"),
    "quantize": ("quantize", "trtllm", "1.3.0rc20", "scale_matrix_perf.parquet"),
    "nccl": ("comm", "nccl", "2.29.2", "nccl_perf.parquet"),
    # DeepEP low-latency dispatch/combine on one 8-GPU NVLink node (the only backend with DeepEP tables)
    "deepep_ll": ("comm", "sglang", "0.5.12", "wideep_deepep_ll_perf.parquet"),
    # DeepEP normal (throughput) dispatch/combine on one 8-GPU NVLink node: prefill's EP kernels
    "deepep_normal": ("comm", "sglang", "0.5.12", "wideep_deepep_normal_perf.parquet"),
    # TensorRT-LLM's MNNVL all-to-all (NVLinkOneSided / TwoSided), EP 2-64 on the NVL72 domain (GB200 only)
    "trtllm_alltoall": ("comm", "trtllm", "1.3.0rc10", "trtllm_alltoall_perf.parquet"),
    # TensorRT-LLM's own all-reduce kernel for small TP tensors (the default fit's stack)
    "custom_allreduce": ("comm", "trtllm", "1.3.0rc20", "custom_allreduce_perf.parquet"),
}

# Per serving stack (the newest version shipped for every system), the tables whose kernels differ from
# TensorRT-LLM's by the most at decode sizes: the MoE op, the custom all-reduce, and the narrow GEMMs (SGLang's
# NVFP4 GEMM runs ~0.57x TensorRT-LLM's time at m <= 64 on GB200). Fitted into the chip's
# [efficiency.backend.<name>] and the scale-up plane's backend.<name> keys (docs/calibration.md).
BACKEND_SOURCES = {
    "sglang": {
        "gemm": ("gemm", "sglang", "0.5.14", "gemm_perf.parquet"),
        "moe": ("moe", "sglang", "0.5.14", "moe_perf.parquet"),
        "custom_allreduce": ("comm", "sglang", "0.5.14", "custom_allreduce_perf.parquet"),
    },
    "vllm": {
        "gemm": ("gemm", "vllm", "0.24.0", "gemm_perf.parquet"),
        "moe": ("moe", "vllm", "0.24.0", "moe_perf.parquet"),
        "custom_allreduce": ("comm", "vllm", "0.24.0", "custom_allreduce_perf.parquet"),
        "mla_generation_module": ("mla", "vllm", "0.24.0", "mla_generation_module_perf.parquet"),
        "mla_context_module": ("mla", "vllm", "0.24.0", "mla_context_module_perf.parquet"),
    },
}

# aiconfigurator's dtype names -> the twin's precisions. fp8 is DeepSeek's block-scaled FP8 (fp8_block, the
# format of the DeepSeek-V3/R1 checkpoints); nvfp4 is W4A4 NVFP4 (Blackwell only).
DTYPES = {"bfloat16": "bf16", "fp8_block": "fp8", "nvfp4": "fp4"}


@dataclass(frozen=True)
class Table:
    frame: pd.DataFrame
    path: str  # relative to the package's systems/ directory

    @property
    def rows(self) -> int:
        return len(self.frame)


def data_root() -> Path:
    return Path(str(resources.files("aiconfigurator_core") / "systems" / "data"))


def package_version() -> str:
    return metadata.version(PACKAGE)


def load(system: str, what: str, root: Path | None = None, backend: str | None = None) -> Table | None:
    """The table `what` (a SOURCES key, or a BACKEND_SOURCES[backend] key) of `system`, latency converted to
    seconds; None if not shipped."""
    op, backend, version, name = BACKEND_SOURCES[backend][what] if backend else SOURCES[what]
    root = root or data_root()
    path = root / system / op / backend / version / name
    if not path.exists():
        return None
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    df = df.copy()
    if "latency" in df:
        df["t"] = df["latency"].astype(float) * 1e-3  # ms -> s
        df = df[df["t"] > 0]
    return Table(df, f"data/{system}/{op}/{backend}/{version}/{name}")
