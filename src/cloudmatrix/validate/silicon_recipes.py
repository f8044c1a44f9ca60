"""The serving configuration each measured silicon row was run with: KV-cache precision, tokens per
scheduler step, chunking and SGLang's request-polling interval, taken from the launch recipe.

Aggregated rows are InferenceMAX runs (the client protocol in silicon_translate.py). Their server
commands are InferenceMAX's `benchmarks/single_node/dsr1_<precision>_<gpu>[_trt].sh`, read in the
mirror github.com/ajith-sirra-amd/InferenceMAX_Rocm_Team at commit 6026f214 (2026-05-12), when its
`.github/configs/nvidia-master.yaml` pinned the images the rows record (lmsysorg/sglang:v0.5.9-cu130
for H200/B200, v0.5.10.post1-cu130 for B300, nvcr.io/nvidia/tensorrt-llm/release:1.1.0rc2.post2 for
H200 and 1.2.0rc6.post2 for B200); the flags below are unchanged in those scripts from b0c4ed21
(2026-01-22) to then. Their --max-running-requests (128 for B200/B300 FP8 at TP8) is not applied:
the CSV has B200 FP8 rows at c256 and c512 whose measured TTFT (1.8 s at 1k/8k c256) rules out a
cap of 128 (half the clients would wait a whole 8k-token answer), so those rows did not run with
it; the CSV's batch stands. What a script leaves unset is the backend's documented default:

- SGLang server arguments: `kv_cache_dtype` "auto" = the model dtype (BF16 for the FP8 checkpoint);
  `max_prefill_tokens` 16,384; `scheduler_recv_interval` 1; with DP attention `chunked_prefill_size`
  is divided by the DP size (server_args `_handle_data_parallelism`).
- TensorRT-LLM LLM API (PyTorch backend): `enable_chunked_prefill` False, so a prompt runs whole in
  one step within `max_num_tokens`, which the scripts size to hold CONC decode tokens plus one prompt.

Disaggregated SGLang rows are InferenceMAX Dynamo runs. The same nvidia-master.yaml @6026f214 lists, per multi-node
config (`dsr1-<precision>-<system>-dynamo-sglang`, its image, and per search-space entry the concurrencies, the
prefill/decode worker counts and tp/ep/dp-attn), the srt-slurm recipe it ran (`CONFIG_FILE=recipes/...`, in
github.com/NVIDIA/srt-slurm at branch sa-submission-q2-2026, deb1dfd9; the recipes used here last changed there in
5063eb43, 2026-03-03; a `file.yaml:override_x` / `:zip_override_x[i]` selector is that file's `base` merged with the
named override, srtctl's rule). A row takes an entry when its system, precision, image version (the CSV's backend
version), ISL/OSL and layout (workers, attention TP or DP, EP of each pool) match and its concurrency is in the entry's
list (PD_RECIPES). From the recipe the twin takes what it can express: each server's `scheduler-recv-interval` (default
1) and `kv-cache-dtype` (fp8_e4m3 -> FP8; unset = "auto" = BF16 for the FP8 checkpoint). Not applied:
`max-running-requests` and `cuda-graph-max-bs` (the CSV's recorded batch is the decode pool's; it fits under both on
every matched row but B200 FP8 8k/1k c288, whose decode servers hold 256 running requests in all
(8k1k_stp_maxtpt_1.yaml one of 256, _0 two of 128) for 288 clients), the Dynamo frontend (the twin's front-end
costs stand). The prefill server's step budget is taken: min(max-prefill-tokens, chunked-prefill-size / DP size)
prompt tokens per rank per step (SGLang's PrefillAdder stops at either), where the CSV's prefill batch of 1 would
give one prompt per rank. Disaggregated TensorRT-LLM rows take their context server's step limits from the same two
sources (validate/silicon_trtllm_recipes.py). Rows that match no
entry (images 0.5.5.post2, which 6026f214 no longer lists, all with DP-attention decode, where SGLang's skipper
allows only interval 1; B200 FP8 layouts it does not list; TensorRT-LLM rows of configs or images it does not list)
take aiconfigurator's own convention, FP8 KV for FP8/FP8-block/NVFP4 checkpoints
(aiconfigurator_core/sdk/models/helpers.py, the `fmha_quant_mode` / `kvcache_quant_mode` override), and the twin's
pool defaults otherwise; a TensorRT-LLM context server without a known recipe runs TensorRT-LLM's own default step
(max_num_tokens 8,192 per rank, whole prompts) rather than the CSV's prefill batch of one prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cloudmatrix.validate.recipe_match import find_entry
from cloudmatrix.validate.silicon_csv import SiliconRow
from cloudmatrix.validate.silicon_trtllm_recipes import trtllm_pd_recipe

RECIPES = "InferenceMAX benchmarks/single_node @6026f214"
# SGLang's documented default when a script sets no --max-prefill-tokens (server_args.max_prefill_tokens)
SGLANG_MAX_PREFILL_TOKENS = 16384
# the twin's generic chunk where no recipe is known (TRT-LLM max_num_tokens and SGLang chunked_prefill_size
# defaults are both 8,192 in their server-argument docs)
DEFAULT_STEP_TOKENS = 8192


@dataclass(frozen=True)
class ServingConfig:
    kv_cache: str  # "fp8" or "bf16"
    step_tokens: int | None  # prompt tokens per scheduler step of one attention-DP rank; None: not colocated
    chunked: bool  # a prompt may be split over steps
    recv_interval: int  # SGLang --scheduler-recv-interval (new requests polled every N decode steps)
    source: str  # where the values come from, in words
    balance_timeout: int = 0  # TRT-LLM attention_dp_config timeout_iters with enable_balance (0: not set)
    batch_wait_iters: int = 0  # TRT-LLM batch_wait_timeout_iters (delayed batching; 0: not set)
    batch_wait_ratio: float = 0.0  # TRT-LLM batch_wait_max_tokens_ratio (0: not set)
    # SGLang PD: the prefill server's --scheduler-recv-interval. Recorded, not simulated: every prefill forward
    # weighs 1,000 in SGLang's recv skipper, so a prefill server polls after each step (and whenever idle) anyway
    prefill_recv_interval: int = 1
    # TensorRT-LLM PD: prompt tokens one context-server rank holds per step (its recipe's max_num_tokens, or
    # max_batch_size whole prompts); None: the row's prefill batch (aiconfigurator's convention)
    prefill_step_tokens: int | None = None
    # PD: the decode server's request cap per attention-DP rank in its recipe (TensorRT-LLM: the generation server's
    # max_batch_size; SGLang: max-running-requests over the DP ranks), silicon_translate._decode_slots; None: not set
    decode_max_batch: int | None = None
    # TensorRT-LLM PD: Dynamo frontends (independent round-robin routers) the recipe's job starts behind nginx
    frontends: int = 1

    def describe(self) -> str:
        step = "" if self.step_tokens is None else f", {self.step_tokens:,} tokens/step/rank"
        chunk = "" if self.step_tokens is None else (", chunked" if self.chunked else ", whole prompts")
        recv = f", recv every {self.recv_interval} decode steps" if self.recv_interval > 1 else ""
        if self.prefill_recv_interval > 1:
            recv += f", prefill server recv interval {self.prefill_recv_interval} (polls every prefill step)"
        if self.prefill_step_tokens is not None:
            recv += f", context steps of up to {self.prefill_step_tokens:,} prompt tokens per rank"
        if self.frontends > 1:
            recv += f", {self.frontends} Dynamo frontends routing in turn each"
        bal = f", attention-DP balance up to {self.balance_timeout} steps" if self.balance_timeout else ""
        wait = ""
        if self.batch_wait_iters:
            wait = f", prompts wait up to {self.batch_wait_iters} steps for {self.batch_wait_ratio:g} x the step tokens"
        return f"{self.kv_cache.upper()} KV{step}{chunk}{recv}{bal}{wait} ({self.source})"


PD_SOURCE = "InferenceMAX nvidia-master.yaml @6026f214 + NVIDIA/srt-slurm sa-submission-q2-2026 (deb1dfd9)"


@dataclass(frozen=True)
class PdRecipe:
    """One search-space entry of an InferenceMAX multi-node SGLang config and what its srt-slurm recipe sets."""

    system: str  # AIC system name
    precision: str
    image: str  # lmsysorg/sglang image version the config pins (the CSV's backend_version)
    isl_osl: tuple[int, int]
    concurrencies: tuple[int, ...]  # the entry's conc-list
    prefill: tuple[int, int, int, int]  # workers, attention TP, attention DP, EP (AIC's naming)
    decode: tuple[int, int, int, int]
    recipe: str  # CONFIG_FILE in srt-slurm
    kv_cache: str  # decode server's kv-cache-dtype: fp8_e4m3 -> "fp8", unset ("auto") -> "bf16" (FP8 checkpoint)
    prefill_recv: int  # scheduler-recv-interval of the prefill server (unset: 1)
    decode_recv: int  # and of the decode server
    prefill_chunk: int  # the prefill server's chunked-prefill-size as set (SGLang divides it by the DP size)
    prefill_max_tokens: int  # and its max-prefill-tokens (per scheduler, i.e. per attention-DP rank)
    decode_max_running: int | None  # the decode server's max-running-requests as set (None: unset, the KV bounds it)

    def prefill_step_tokens(self) -> int:
        """Prompt tokens one prefill rank's step holds: SGLang's chunk budget (chunked_prefill_size // dp_size under
        DP attention, server_args._handle_data_parallelism) and its max_prefill_tokens, whichever is smaller."""
        dp = self.prefill[2]
        return min(self.prefill_max_tokens, self.prefill_chunk // dp if dp > 1 else self.prefill_chunk)

    def decode_slots_per_rank(self) -> int | None:
        """Requests one decode rank runs at most: max-running-requests, which SGLang divides by the DP size under DP
        attention (model_executor/model_runner.py: `server_args.max_running_requests // self.dp_size`, the
        attention-DP size); None where the recipe leaves it unset."""
        return None if self.decode_max_running is None else self.decode_max_running // self.decode[2]


# Every non-MTP entry of nvidia-master.yaml @6026f214 that a complete measured row matches (a dp-attn entry's tp is
# its attention-DP size: tp 8, ep 8, dp-attn true -> (workers, 1, 8, 8)); values read from the resolved recipe, as
# benchmarks/recipes_sglang_pd.py prints them (unset chunked-prefill-size / max-prefill-tokens: SGLang's 16,384).
# fmt: off
PD_RECIPES: tuple[PdRecipe, ...] = (
    PdRecipe("gb200", "fp8", "0.5.8.post1", (1024, 1024), (4, 8), (1, 4, 1, 1), (1, 4, 1, 1),
             "recipes/gb200-fp8/1k1k/low-latency.yaml", "fp8", 10, 10, 8192, 16384, 128),
    PdRecipe("gb200", "fp8", "0.5.8.post1", (1024, 1024), (1024, 2048, 4096, 6144), (2, 1, 8, 8), (1, 1, 32, 32),
             "recipes/gb200-fp8/1k1k/max-tpt.yaml", "fp8", 1, 1, 131072, 16384, 45000),
    PdRecipe("gb200", "fp8", "0.5.8.post1", (1024, 1024), (4096,), (1, 1, 8, 8), (1, 1, 8, 8),
             "recipes/gb200-fp8/1k1k/ultra-tpt.yaml", "fp8", 1, 1, 131072, 16384, 5120),
    PdRecipe("gb200", "fp8", "0.5.8.post1", (8192, 1024), (4, 8, 16), (1, 8, 1, 1), (1, 8, 1, 1),
             "recipes/gb200-fp8/8k1k/low-latency.yaml", "fp8", 10, 10, 24576, 16384, 512),
    PdRecipe("gb200", "fp8", "0.5.8.post1", (8192, 1024), (512, 1024, 2048, 6144), (5, 1, 8, 8), (1, 1, 32, 32),
             "recipes/gb200-fp8/8k1k/mid-curve.yaml", "fp8", 1, 1, 131072, 16384, 8192),
    PdRecipe("gb300", "fp8", "0.5.8.post1", (1024, 1024), (4, 8, 16, 32), (1, 4, 1, 1), (4, 4, 1, 1),
             "recipes/gb300-fp8/1k1k/stp/low-latency.yaml", "fp8", 10, 1, 8192, 8192, 128),
    PdRecipe("gb300", "fp8", "0.5.8.post1", (1024, 1024), (1024, 2048, 4096, 6144), (2, 1, 8, 8), (1, 1, 32, 32),
             "recipes/gb300-fp8/1k1k/stp/mid.yaml", "fp8", 1, 1, 131072, 16384, 45000),
    PdRecipe("gb300", "fp8", "0.5.8.post1", (1024, 1024), (4096, 7168, 7680), (1, 1, 8, 8), (1, 1, 8, 8),
             "recipes/gb300-fp8/1k1k/stp/max.yaml", "fp8", 1, 1, 131072, 16384, 45000),
    PdRecipe("gb300", "fp8", "0.5.8.post1", (8192, 1024), (4, 8), (1, 4, 1, 1), (1, 4, 1, 1),
             "recipes/gb300-fp8/8k1k/stp/low-latency.yaml", "fp8", 10, 1, 32768, 32768, 128),
    PdRecipe("gb300", "fp8", "0.5.8.post1", (8192, 1024), (128, 256, 512, 1024), (5, 1, 8, 8), (1, 1, 32, 32),
             "recipes/gb300-fp8/8k1k/stp/mid.yaml", "fp8", 1, 1, 131072, 16384, 45000),
    PdRecipe("gb200", "fp4", "0.5.8", (1024, 1024), (4, 8, 32), (1, 4, 1, 1), (2, 4, 1, 1),
             "recipes/gb200-fp4/1k1k/low-latency.yaml", "fp8", 10, 10, 8192, 16384, None),
    PdRecipe("gb200", "fp4", "0.5.8", (1024, 1024), (512, 2048, 4096, 8192), (4, 1, 4, 4), (1, 1, 32, 32),
             "recipes/gb200-fp4/1k1k/mid-curve.yaml", "fp8", 1, 1, 65536, 32768, 67584),
    PdRecipe("gb200", "fp4", "0.5.8", (8192, 1024), (4, 8), (1, 4, 1, 1), (4, 4, 1, 1),
             "recipes/gb200-fp4/8k1k/low-latency.yaml", "fp8", 10, 10, 24576, 16384, None),
    PdRecipe("gb200", "fp4", "0.5.8", (8192, 1024), (2048,), (10, 4, 1, 1), (1, 1, 32, 32),
             "recipes/gb200-fp4/8k1k/max-tpt.yaml", "fp8", 1, 1, 131072, 524288, 16384),
    PdRecipe("gb300", "fp4", "0.5.8.post1", (1024, 1024), (4, 8, 32), (1, 4, 1, 1), (2, 4, 1, 1),
             "recipes/gb300-fp4/1k1k/low_latency.yaml", "fp8", 10, 10, 8192, 16384, None),
    PdRecipe("gb300", "fp4", "0.5.8.post1", (1024, 1024), (512, 2048, 4096, 8192), (4, 1, 4, 4), (1, 1, 32, 32),
             "recipes/gb300-fp4/1k1k/mid_curve.yaml", "fp8", 1, 1, 65536, 32768, 67584),
    PdRecipe("gb300", "fp4", "0.5.8.post1", (8192, 1024), (4, 8, 32, 64), (1, 4, 1, 1), (4, 4, 1, 1),
             "recipes/gb300-fp4/8k1k/low_latency.yaml", "fp8", 10, 10, 24576, 16384, None),
    PdRecipe("gb300", "fp4", "0.5.8.post1", (8192, 1024), (2048,), (10, 4, 1, 1), (1, 1, 32, 32),
             "recipes/gb300-fp4/8k1k/max_tpt.yaml", "fp8", 1, 1, 131072, 524288, 16384),
    PdRecipe("h200_sxm", "fp8", "0.5.8.post1", (8192, 1024), (64, 128, 256), (1, 8, 1, 1), (1, 1, 8, 8),
             "recipes/h200/8k1k/bs128-1p1d-dep.yaml", "bf16", 1, 1, 163840, 163840, 256),
    PdRecipe("b200_sxm", "fp4", "0.5.8.post1", (1024, 1024), (512,), (1, 1, 4, 4), (1, 1, 8, 8),
             "recipes/b200-fp4/1k1k.yaml:zip_override_stp_maxtpt[0]", "fp8", 1, 1, 32768, 32768, 1024),
    PdRecipe("b200_sxm", "fp4", "0.5.8.post1", (1024, 1024), (512,), (1, 1, 4, 4), (2, 1, 8, 8),
             "recipes/b200-fp4/1k1k.yaml:zip_override_stp_maxtpt[1]", "fp8", 1, 1, 32768, 32768, 512),
    PdRecipe("b200_sxm", "fp4", "0.5.8.post1", (8192, 1024), (64, 128), (1, 1, 4, 4), (1, 8, 1, 8),
             "recipes/b200-fp4/8k1k.yaml:zip_override_stp_lowlat[0]", "fp8", 1, 1, 32768, 32768, 512),
    PdRecipe("b200_sxm", "fp4", "0.5.8.post1", (8192, 1024), (4, 8, 16, 64), (1, 4, 1, 1), (1, 8, 1, 1),
             "recipes/b200-fp4/8k1k.yaml:override_stp_tp4", "fp8", 1, 1, 32768, 32768, 512),
    PdRecipe("b200_sxm", "fp4", "0.5.8.post1", (8192, 1024), (1024, 2048), (7, 1, 4, 4), (2, 1, 8, 8),
             "recipes/b200-fp4/8k1k.yaml:override_stp_maxtpt_7p2d", "fp8", 1, 1, 65536, 65536, 2048),
    PdRecipe("b200_sxm", "fp8", "0.5.8.post1", (1024, 1024), (4,), (1, 8, 1, 8), (1, 8, 1, 8),
             "recipes/b200-fp8/1k1k.yaml:zip_override_stp_lowlat[0]", "fp8", 1, 1, 32768, 32768, 512),
    PdRecipe("b200_sxm", "fp8", "0.5.8.post1", (8192, 1024), (128,), (1, 1, 8, 1), (4, 8, 1, 1),
             "recipes/b200-fp8/8k1k_stp_lowlat_1.yaml", "fp8", 1, 1, 65536, 8192, 32),
    PdRecipe("b200_sxm", "fp8", "0.5.8.post1", (8192, 1024), (288,), (1, 1, 8, 1), (2, 1, 8, 8),
             "recipes/b200-fp8/8k1k_stp_maxtpt_0.yaml", "fp8", 1, 1, 65536, 8192, 128),
    PdRecipe("b200_sxm", "fp8", "0.5.8.post1", (8192, 1024), (160, 288), (1, 1, 8, 1), (1, 1, 8, 8),
             "recipes/b200-fp8/8k1k_stp_maxtpt_1.yaml", "fp8", 1, 1, 65536, 8192, 256),
    PdRecipe("b200_sxm", "fp8", "0.5.8.post1", (8192, 1024), (512,), (2, 1, 8, 1), (1, 1, 8, 8),
             "recipes/b200-fp8/8k1k_stp_maxtpt_2.yaml", "fp8", 1, 1, 65536, 8192, 512),
    PdRecipe("b200_sxm", "fp8", "0.5.8.post1", (8192, 1024), (1024,), (3, 1, 8, 1), (1, 1, 8, 8),
             "recipes/b200-fp8/8k1k_stp_maxtpt_3.yaml", "fp8", 1, 1, 65536, 8192, 1024),
)
# fmt: on


def pd_recipe(row: SiliconRow) -> PdRecipe | None:
    """The InferenceMAX entry (and srt-slurm recipe) a disaggregated SGLang row ran, or None if none matches."""
    if row.backend != "sglang" or row.mode != "disagg":
        return None
    return find_entry(PD_RECIPES, row)


def _aic_kv(row: SiliconRow) -> str:
    return "fp8" if row.precision in ("fp8", "fp4") else "bf16"


def _recv_interval(conc: int) -> int:
    # the B200/B300 SGLang scripts: SCHEDULER_RECV_INTERVAL=10, or 30 when CONC >= 16 (TP8 and FP4 arms)
    return 30 if conc >= 16 else 10


def _trt_delay_batching(row: SiliconRow, conc: int) -> bool:
    """dsr1_fp8_b200_trt.sh: DELAY_BATCHING=true at 1k/1k with CONC >= 64 appends batch_wait_timeout_iters 40,
    batch_wait_max_tokens_ratio 0.8. The script gained it with the 1.2.0rc6.post2 image (InferenceMAX ec7bafaa,
    2026-01-29, "dsr1 fp8 b200 agg update"); rows on the earlier 1.1.0rc2.post2 image ran without it, and rows that
    record no image are not known to have run it, so they go without. TensorRT-LLM applies it only without
    attention DP (sim/colocated.py _hold_for_batch)."""
    version = row.backend_version
    recent = bool(version) and not version.startswith(("1.0", "1.1"))
    b200_fp8 = row.system == "b200_sxm" and row.precision == "fp8"
    return b200_fp8 and recent and (row.isl, row.osl) == (1024, 1024) and conc >= 64


def serving_config(row: SiliconRow) -> ServingConfig:
    """The configuration row `row` was measured with (see the module docstring for every source)."""
    if row.mode != "agg" or row.agg is None:
        trt = trtllm_pd_recipe(row)
        if trt is not None:
            src = f"{trt.source} {trt.recipe}"
            return ServingConfig(
                trt.kv_cache, None, True, 1, src, prefill_step_tokens=trt.step_tokens(row.isl),
                decode_max_batch=trt.gen_max_batch, frontends=trt.frontends,
            )  # fmt: skip
        if row.backend == "trtllm":
            # no recipe known: the context server's TensorRT-LLM defaults (max_num_tokens 8,192, max_batch_size
            # 2,048, no chunking: whole prompts up to 8,192 tokens per rank per step), not the row's prefill batch
            # of 1, which cannot carry the measured request rates (docs/accuracy.md, "Session 7")
            src = "aiconfigurator's KV convention, TensorRT-LLM's default context step"
            return ServingConfig(_aic_kv(row), None, True, 1, src, prefill_step_tokens=DEFAULT_STEP_TOKENS)
        pd = pd_recipe(row)
        if pd is None:
            return ServingConfig(_aic_kv(row), None, True, 1, "aiconfigurator's KV convention")
        src = f"{PD_SOURCE} {pd.recipe}"
        return ServingConfig(
            pd.kv_cache, None, True, pd.decode_recv, src, prefill_recv_interval=pd.prefill_recv,
            prefill_step_tokens=pd.prefill_step_tokens(), decode_max_batch=pd.decode_slots_per_rank(),
        )  # fmt: skip
    conc = row.concurrency or 1
    dp = row.agg.attention_dp or 1
    gpus = (row.agg.tp or 1) * dp
    key = (row.backend, row.system, row.precision)
    if row.backend == "trtllm" and row.system in ("h200_sxm", "b200_sxm") and row.precision in ("fp8", "fp4"):
        # dsr1_fp8_h200_trt.sh, dsr1_fp8_b200_trt.sh, dsr1_fp4_b200_trt.sh: kv_cache_config dtype fp8;
        # MAX_NUM_TOKENS = max(8192, ceil((CONC + ISL + 64) / 64) * 64), per rank under attention DP; with
        # DP_ATTENTION=true, attention_dp_config: enable_balance true, timeout_iters 60, batching_wait_iters 0
        tokens = max(8192, math.ceil((conc + row.isl + 64) / 64) * 64)
        name = f"{RECIPES} dsr1_{row.precision}_{row.system[:4]}_trt.sh"
        wait = _trt_delay_batching(row, conc)
        return ServingConfig(
            "fp8", tokens, False, 1, name, balance_timeout=60 if dp > 1 else 0,
            batch_wait_iters=40 if wait else 0, batch_wait_ratio=0.8 if wait else 0.0,
        )  # fmt: skip
    if key == ("sglang", "h200_sxm", "fp8"):
        # dsr1_fp8_h200.sh: --chunked-prefill-size 32768 --max-prefill-tokens 32768, no --kv-cache-dtype
        src = f"{RECIPES} dsr1_fp8_h200.sh + SGLang kv_cache_dtype auto"
        return ServingConfig("bf16", 32768 // dp, True, 1, src)
    if row.backend == "sglang" and row.system in ("b200_sxm", "b300_sxm") and row.precision == "fp8":
        # dsr1_fp8_b200.sh (dsr1_fp8_b300.sh is the same recipe): --kv-cache-dtype fp8_e4m3; TP8: chunk and
        # max-prefill 32768, recv 10/30; TP4 (8k/1k only): 8192, recv 10
        tokens, recv = (8192, 10) if gpus == 4 else (32768, _recv_interval(conc))
        name = f"{RECIPES} dsr1_fp8_{row.system[:4]}.sh"
        return ServingConfig("fp8", tokens // dp, True, recv if dp == 1 else 1, name)
    if row.backend == "sglang" and row.system in ("b200_sxm", "b300_sxm") and row.precision == "fp4":
        # dsr1_fp4_b200.sh / dsr1_fp4_b300.sh: --kv-cache-dtype fp8_e4m3 --chunked-prefill-size 16384, max-prefill
        # left at its default (16,384), recv 10/30
        tokens = min(16384, SGLANG_MAX_PREFILL_TOKENS)
        name = f"{RECIPES} dsr1_fp4_{row.system[:4]}.sh"
        return ServingConfig("fp8", tokens // dp, True, _recv_interval(conc) if dp == 1 else 1, name)
    # no recipe known for this system and stack: aiconfigurator's KV convention and the generic chunk
    return ServingConfig(_aic_kv(row), DEFAULT_STEP_TOKENS, True, 1, "aiconfigurator's KV convention, default chunk")
