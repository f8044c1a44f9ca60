"""The context-server configuration each disaggregated TensorRT-LLM silicon row ran, from its launch recipe.

These rows are InferenceMAX Dynamo runs (images ai-dynamo/tensorrtllm-runtime, the CSV's backend version). The
mirror github.com/ajith-sirra-amd/InferenceMAX_Rocm_Team at 6026f214 lists in `.github/configs/nvidia-master.yaml`,
per multi-node config (`dsr1-<precision>-<gpu>-dynamo-trt`), its image and per search-space entry the concurrencies,
the prefill/decode worker counts, tp/ep/dp-attn and the srt-slurm recipe it ran (github.com/NVIDIA/srt-slurm, branch
sa-submission-q2-2026 at deb1dfd9, `recipes/trtllm/...`). A row takes an entry when its system, precision, image,
ISL/OSL and both layouts match and its concurrency is in the entry's list (or the recipe's own benchmark
concurrencies and layouts, which some entries state differently). From the recipe's context server
(`backend.trtllm_config.prefill`) the twin takes its step limits: `max_batch_size` prompts and `max_num_tokens` tokens
per attention-DP rank per step (whole prompts: TensorRT-LLM's enable_chunked_prefill is off), so a prompt batch of the
row's prefill pool holds min(max_num_tokens, max_batch_size x ISL) tokens per rank. aiconfigurator's convention, the
one these rows took before, gives the context server the row's batch of 1 (one prompt per rank per step), which at
high concurrency cannot carry the request rate the measured deployment sustained (b200 fp4 1k/1k c2192: 89 requests/s
through one 4-rank context worker). The recipes' KV-cache dtype is fp8 in every entry, aiconfigurator's convention too.
Not taken (the twin has no key for them, docs/accuracy.md "Session 6"): the context server's `moe_config.backend`
(TRTLLM for FP4, DEEPGEMM for FP8 on Blackwell: the twin costs the table's CUTLASS curve above 1,024 tokens) and
`disable_overlap_scheduler: true`; the decode server's `stream_interval` (20-100: neither TTFT nor TPOT as the
client measures them, trtllm.toml). From the generation server (`backend.trtllm_config.decode`) the twin takes its
`max_batch_size`, the sequences each attention-DP rank runs at once (up to the concurrency and to what the KV cache
holds, silicon_translate._fit_kv_cache). It is often not the row's batch, which the CSV records as concurrency /
decode workers: gb300
fp8 1k/1k c24 ran `ctx1_gen4_tep8_batch4_eplb0_mtp0_24.yaml`, four generation workers of max_batch_size 4, so 16
slots for 24 clients where the CSV says batch 6; h100 fp8 c6 ran three workers of max_batch_size 1 (3 slots, 6
clients; the CSV says 2). The clients beyond the slots wait for a running request to finish, which the measured TTFT
shows (docs/accuracy.md, "Session 9"). From the recipe's job the twin also takes how many Dynamo frontends it starts
(recipes_trtllm_pd.frontends): on a multi-node job up to ten, each with its own round-robin pointer, behind nginx,
unless the recipe sets `enable_multiple_frontends: false`. The 1k/8k entries, which the later grid no longer lists,
are read at older revisions (TRT_PD_SOURCE_OLDER).

`python benchmarks/recipes_trtllm_pd.py` prints the table from the two mirrors.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudmatrix.validate.recipe_match import find_entry
from cloudmatrix.validate.silicon_csv import SiliconRow

TRT_PD_SOURCE = "InferenceMAX nvidia-master.yaml @6026f214 + NVIDIA/srt-slurm sa-submission-q2-2026 (deb1dfd9)"
# the 1k/8k entries, which the later grid no longer lists (benchmarks/recipes_trtllm_pd.py --older)
TRT_PD_SOURCE_OLDER = "InferenceMAX nvidia-master.yaml @0aae52d4 (2026-02-06) + NVIDIA/srt-slurm @75f6e32a (2026-01-27)"


@dataclass(frozen=True)
class TrtPdRecipe:
    """One search-space entry of an InferenceMAX multi-node TensorRT-LLM config and its context server's limits."""

    system: str  # aiconfigurator system name
    precision: str
    image: str  # ai-dynamo/tensorrtllm-runtime version the config pins (the CSV's backend_version)
    isl_osl: tuple[int, int]
    concurrencies: tuple[int, ...]  # the entry's conc-list
    prefill: tuple[int, int, int, int]  # workers, attention TP, attention DP, EP (aiconfigurator's naming)
    decode: tuple[int, int, int, int]
    recipe: str  # CONFIG_FILE in srt-slurm
    ctx_max_batch: int  # context server max_batch_size: prompts per attention-DP rank per step
    ctx_max_tokens: int  # context server max_num_tokens: tokens per attention-DP rank per step
    kv_cache: str  # kv_cache_config dtype
    gen_max_batch: int  # generation server max_batch_size: sequences one attention-DP rank runs at once
    frontends: int  # Dynamo frontends the job starts, each its own round-robin router (serving/router.py)
    source: str = TRT_PD_SOURCE  # the revisions the entry and its recipe were read at

    def step_tokens(self, isl: int) -> int:
        """Prompt tokens one rank's context step holds: the token cap, or max_batch_size whole prompts."""
        return min(self.ctx_max_tokens, self.ctx_max_batch * isl)


# Every non-MTP entry of nvidia-master.yaml @6026f214 that a complete measured row matches, as
# benchmarks/recipes_trtllm_pd.py prints it: on the entry's concurrencies and layouts, or on its recipe's own (the H200
# entries list a concurrency per decode worker, 64, where the recipe benchmarks 576 over its 9 workers, as the CSV
# records; some H200 rows record the recipe's context layout, TP8 without attention DP).
# fmt: off
TRTLLM_PD_RECIPES: tuple[TrtPdRecipe, ...] = (
    TrtPdRecipe("b200_sxm", "fp4", "0.8.1.post1", (1024, 1024), (4096,), (1, 1, 4, 4), (1, 1, 8, 8),
                "recipes/trtllm/b200-fp4/1k1k/stp/ctx1_gen1_dep8_batch512_eplb0_mtp0.yaml",
                8, 10240, "fp8", 512, 1),
    TrtPdRecipe("b200_sxm", "fp4", "0.8.1.post1", (1024, 1024), (2192,), (1, 1, 4, 4), (2, 1, 8, 8),
                "recipes/trtllm/b200-fp4/1k1k/stp/ctx1_gen2_dep8_batch128_eplb0_mtp0.yaml",
                8, 10240, "fp8", 128, 2),
    TrtPdRecipe("b200_sxm", "fp4", "0.8.1.post1", (1024, 1024), (10, 15, 25, 45, 90, 180), (1, 1, 4, 4), (5, 8, 1, 8),
                "recipes/trtllm/b200-fp4/1k1k/stp/ctx1_gen5_tep8_batch32_eplb0_mtp0.yaml",
                8, 10240, "fp8", 32, 5),
    TrtPdRecipe("b200_sxm", "fp4", "0.8.1.post1", (1024, 1024), (450,), (1, 1, 4, 4), (6, 8, 1, 8),
                "recipes/trtllm/b200-fp4/1k1k/stp/ctx1_gen6_tep8_batch64_eplb0_mtp0.yaml",
                8, 10240, "fp8", 64, 6),
    TrtPdRecipe("b200_sxm", "fp4", "0.8.1.post1", (8192, 1024), (10, 15, 25, 50, 100), (1, 1, 4, 4), (5, 8, 1, 8),
                "recipes/trtllm/b200-fp4/8k1k/stp/ctx1_gen5_tep8_batch8_eplb0_mtp0.yaml",
                2, 16896, "fp8", 16, 5),
    TrtPdRecipe("b200_sxm", "fp4", "0.8.1.post1", (8192, 1024), (370,), (2, 1, 4, 4), (5, 8, 1, 8),
                "recipes/trtllm/b200-fp4/8k1k/stp/ctx2_gen5_tep8_batch64_eplb0_mtp0.yaml",
                2, 16896, "fp8", 64, 5),
    TrtPdRecipe("b200_sxm", "fp8", "0.8.1.post2", (1024, 1024), (1920,), (1, 1, 8, 8), (5, 1, 8, 8),
                "recipes/trtllm/b200-fp8/1k1k/stp/ctx1_gen5_dep8_batch48_eplb0_mtp0_1920.yaml",
                16, 16384, "fp8", 48, 1),
    TrtPdRecipe("b200_sxm", "fp8", "0.8.1.post2", (1024, 1024), (4096,), (1, 1, 8, 8), (1, 1, 8, 8),
                "recipes/trtllm/b200-fp8/1k1k/stp/ctx1_gen1_dep8_batch512_eplb0_mtp0_4096.yaml",
                16, 16384, "fp8", 512, 1),
    TrtPdRecipe("b200_sxm", "fp8", "0.8.1.post2", (8192, 1024), (1,), (1, 8, 1, 1), (1, 8, 1, 1),
                "recipes/trtllm/b200-fp8/8k1k/stp/ctx1_gen1_tp8_batch1_eplb0_mtp0_1.yaml",
                64, 8320, "fp8", 1, 1),
    TrtPdRecipe("b200_sxm", "fp8", "0.8.1.post2", (8192, 1024), (32,), (1, 1, 8, 1), (4, 8, 1, 1),
                "recipes/trtllm/b200-fp8/8k1k/stp/ctx1_gen4_tp8_batch32_eplb0_mtp0_32.yaml",
                1, 8320, "fp8", 8, 1),
    TrtPdRecipe("b200_sxm", "fp8", "0.8.1.post2", (8192, 1024), (128,), (1, 1, 8, 1), (4, 8, 1, 1),
                "recipes/trtllm/b200-fp8/8k1k/stp/ctx1_gen4_tp8_batch32_eplb0_mtp0_128.yaml",
                1, 8320, "fp8", 32, 1),
    TrtPdRecipe("b200_sxm", "fp8", "0.8.1.post2", (8192, 1024), (96,), (1, 1, 8, 1), (6, 8, 1, 1),
                "recipes/trtllm/b200-fp8/8k1k/stp/ctx1_gen6_tp8_batch16_eplb0_mtp0_96.yaml",
                1, 8320, "fp8", 16, 1),
    TrtPdRecipe("b200_sxm", "fp8", "0.8.1.post2", (8192, 1024), (128,), (1, 1, 8, 1), (1, 1, 8, 8),
                "recipes/trtllm/b200-fp8/8k1k/stp/ctx1_gen1_dep8_batch128_eplb0_mtp0_128.yaml",
                1, 8320, "fp8", 128, 1),
    TrtPdRecipe("b200_sxm", "fp8", "0.8.1.post2", (8192, 1024), (128,), (1, 1, 8, 1), (2, 1, 8, 8),
                "recipes/trtllm/b200-fp8/8k1k/stp/ctx1_gen2_dep8_batch64_eplb0_mtp0_128.yaml",
                1, 8320, "fp8", 64, 1),
    TrtPdRecipe("b200_sxm", "fp8", "0.8.1.post2", (8192, 1024), (256,), (1, 1, 8, 1), (1, 1, 8, 8),
                "recipes/trtllm/b200-fp8/8k1k/stp/ctx1_gen1_dep8_batch256_eplb0_mtp0_256.yaml",
                1, 8320, "fp8", 256, 1),
    TrtPdRecipe("b200_sxm", "fp8", "0.8.1.post2", (8192, 1024), (640,), (2, 1, 8, 1), (1, 1, 8, 8),
                "recipes/trtllm/b200-fp8/8k1k/stp/ctx2_gen1_dep8_batch640_eplb0_mtp0_640.yaml",
                1, 8320, "fp8", 640, 1),
    TrtPdRecipe("h200_sxm", "fp8", "0.8.1.post1", (1024, 1024), (36,), (1, 1, 8, 8), (9, 8, 1, 8),
                "recipes/trtllm/h200/1k1k/stp/c4_ctx1_gen9_tep8_batch256_eplb0_mtp0.yaml",
                8, 8192, "fp8", 256, 1),
    TrtPdRecipe("h200_sxm", "fp8", "0.8.1.post1", (1024, 1024), (72,), (1, 1, 8, 8), (9, 8, 1, 8),
                "recipes/trtllm/h200/1k1k/stp/c8_ctx1_gen9_tep8_batch256_eplb0_mtp0.yaml",
                8, 8192, "fp8", 256, 1),
    TrtPdRecipe("h200_sxm", "fp8", "0.8.1.post1", (1024, 1024), (144,), (1, 1, 8, 8), (9, 8, 1, 8),
                "recipes/trtllm/h200/1k1k/stp/c16_ctx1_gen9_tep8_batch256_eplb0_mtp0.yaml",
                8, 8192, "fp8", 256, 1),
    TrtPdRecipe("h200_sxm", "fp8", "0.8.1.post1", (1024, 1024), (288,), (1, 1, 8, 8), (9, 8, 1, 8),
                "recipes/trtllm/h200/1k1k/stp/c32_ctx1_gen9_tep8_batch256_eplb0_mtp0.yaml",
                8, 8192, "fp8", 256, 1),
    TrtPdRecipe("h200_sxm", "fp8", "0.8.1.post1", (1024, 1024), (576,), (1, 1, 8, 8), (9, 8, 1, 8),
                "recipes/trtllm/h200/1k1k/stp/c64_ctx1_gen9_tep8_batch256_eplb0_mtp0.yaml",
                8, 8192, "fp8", 256, 1),
    TrtPdRecipe("h200_sxm", "fp8", "0.8.1.post1", (1024, 1024), (1152,), (1, 1, 8, 8), (9, 1, 8, 8),
                "recipes/trtllm/h200/1k1k/stp/c128_ctx1_gen9_dep8_batch512_eplb0_mtp0.yaml",
                8, 8192, "fp8", 512, 1),
    TrtPdRecipe("h200_sxm", "fp8", "0.8.1.post1", (1024, 1024), (1536,), (1, 1, 8, 8), (6, 1, 8, 8),
                "recipes/trtllm/h200/1k1k/stp/c256_ctx1_gen6_dep8_batch512_eplb0_mtp0.yaml",
                8, 8192, "fp8", 512, 1),
    TrtPdRecipe("h200_sxm", "fp8", "0.8.1.post1", (1024, 1024), (3584,), (2, 1, 8, 8), (7, 1, 8, 8),
                "recipes/trtllm/h200/1k1k/stp/c512_ctx2_gen7_dep8_batch512_eplb0_mtp0.yaml",
                8, 8192, "fp8", 512, 1),
    TrtPdRecipe("h200_sxm", "fp8", "0.8.1.post1", (8192, 1024), (28,), (1, 8, 1, 8), (7, 8, 1, 8),
                "recipes/trtllm/h200/8k1k/stp/c4_ctx1_gen7_tep8_batch32_eplb0_mtp0.yaml",
                2, 16640, "fp8", 32, 1),
    TrtPdRecipe("h200_sxm", "fp8", "0.8.1.post1", (8192, 1024), (48,), (1, 8, 1, 8), (6, 8, 1, 8),
                "recipes/trtllm/h200/8k1k/stp/c8_ctx1_gen6_tep8_batch16_eplb0_mtp0.yaml",
                2, 16640, "fp8", 16, 1),
    TrtPdRecipe("h200_sxm", "fp8", "0.8.1.post1", (8192, 1024), (48,), (1, 8, 1, 8), (3, 8, 1, 8),
                "recipes/trtllm/h200/8k1k/stp/c16_ctx1_gen3_tep8_batch32_eplb0_mtp0.yaml",
                2, 16640, "fp8", 32, 1),
    TrtPdRecipe("h200_sxm", "fp8", "0.8.1.post1", (8192, 1024), (160,), (2, 8, 1, 8), (5, 8, 1, 8),
                "recipes/trtllm/h200/8k1k/stp/c32_ctx2_gen5_tep8_batch128_eplb0_mtp0.yaml",
                2, 16640, "fp8", 128, 1),
    TrtPdRecipe("h200_sxm", "fp8", "0.8.1.post1", (8192, 1024), (192,), (2, 8, 1, 8), (3, 1, 8, 8),
                "recipes/trtllm/h200/8k1k/stp/c64_ctx2_gen3_dep8_batch128_eplb0_mtp0.yaml",
                2, 16640, "fp8", 128, 1),
    TrtPdRecipe("h200_sxm", "fp8", "0.8.1.post1", (8192, 1024), (128,), (1, 8, 1, 8), (1, 1, 8, 8),
                "recipes/trtllm/h200/8k1k/stp/c128_ctx1_gen1_dep8_batch256_eplb0_mtp0.yaml",
                2, 16640, "fp8", 256, 1),
    TrtPdRecipe("h200_sxm", "fp8", "0.8.1.post1", (8192, 1024), (768,), (5, 8, 1, 8), (3, 1, 8, 8),
                "recipes/trtllm/h200/8k1k/stp/c256_ctx5_gen3_dep8_batch256_eplb0_mtp0.yaml",
                2, 16640, "fp8", 256, 1),
    TrtPdRecipe("h200_sxm", "fp8", "0.8.1.post1", (8192, 1024), (512,), (3, 8, 1, 8), (1, 1, 8, 8),
                "recipes/trtllm/h200/8k1k/stp/c512_ctx3_gen1_dep8_batch512_eplb0_mtp0.yaml",
                2, 16640, "fp8", 512, 1),
    TrtPdRecipe("h100_sxm", "fp8", "0.8.1.post3", (1024, 1024), (6,), (1, 1, 16, 16), (3, 16, 1, 16),
                "recipes/trtllm/h100-fp8/1k1k/stp/ctx1_gen3_tep16_batch1_eplb0_mtp0.yaml",
                2, 2048, "fp8", 1, 1),
    TrtPdRecipe("h100_sxm", "fp8", "0.8.1.post3", (1024, 1024), (9,), (1, 1, 16, 16), (3, 16, 1, 16),
                "recipes/trtllm/h100-fp8/1k1k/stp/ctx1_gen3_tep16_batch2_eplb0_mtp0.yaml",
                2, 2048, "fp8", 2, 1),
    TrtPdRecipe("h100_sxm", "fp8", "0.8.1.post3", (1024, 1024), (30,), (1, 1, 16, 16), (3, 16, 1, 16),
                "recipes/trtllm/h100-fp8/1k1k/stp/ctx1_gen3_tep16_batch8_eplb0_mtp0.yaml",
                2, 2048, "fp8", 8, 1),
    TrtPdRecipe("h100_sxm", "fp8", "0.8.1.post3", (1024, 1024), (60,), (1, 1, 16, 16), (3, 16, 1, 16),
                "recipes/trtllm/h100-fp8/1k1k/stp/ctx1_gen3_tep16_batch16_eplb0_mtp0.yaml",
                2, 2048, "fp8", 16, 1),
    TrtPdRecipe("h100_sxm", "fp8", "0.8.1.post3", (8192, 1024), (6,), (1, 1, 16, 16), (3, 16, 1, 16),
                "recipes/trtllm/h100-fp8/8k1k/stp/ctx1_gen3_tep16_batch1_eplb0_mtp0.yaml",
                1, 8224, "fp8", 1, 1),
    TrtPdRecipe("h100_sxm", "fp8", "0.8.1.post3", (8192, 1024), (9,), (1, 1, 16, 16), (3, 16, 1, 16),
                "recipes/trtllm/h100-fp8/8k1k/stp/ctx1_gen3_tep16_batch2_eplb0_mtp0.yaml",
                1, 8224, "fp8", 2, 1),
    TrtPdRecipe("h100_sxm", "fp8", "0.8.1.post3", (8192, 1024), (30,), (1, 1, 16, 16), (3, 16, 1, 16),
                "recipes/trtllm/h100-fp8/8k1k/stp/ctx1_gen3_tep16_batch8_eplb0_mtp0.yaml",
                1, 8224, "fp8", 8, 1),
    TrtPdRecipe("h100_sxm", "fp8", "0.8.1.post3", (8192, 1024), (154,), (1, 1, 16, 16), (2, 16, 1, 16),
                "recipes/trtllm/h100-fp8/8k1k/stp/ctx1_gen2_tep16_batch64_eplb0_mtp0.yaml",
                1, 8224, "fp8", 64, 1),
    TrtPdRecipe("gb200", "fp4", "0.8.1.post2", (1024, 1024), (6144,), (1, 1, 4, 4), (2, 1, 4, 4),
                "recipes/trtllm/gb200-fp4/1k1k/stp/ctx1_gen2_dep4_batch768_eplb0_mtp0.yaml",
                16, 16384, "fp8", 768, 2),
    TrtPdRecipe("gb200", "fp4", "0.8.1.post2", (1024, 1024), (12, 24, 48, 96, 192), (1, 1, 4, 4), (4, 8, 1, 8),
                "recipes/trtllm/gb200-fp4/1k1k/stp/ctx1_gen4_tep8_batch32_eplb0_mtp0.yaml",
                16, 16384, "fp8", 32, 8),
    TrtPdRecipe("gb200", "fp4", "0.8.1.post2", (8192, 1024), (12, 44, 76), (1, 1, 4, 4), (4, 8, 1, 8),
                "recipes/trtllm/gb200-fp4/8k1k/stp/ctx1_gen4_tep8_batch16_eplb0_mtp0.yaml",
                2, 16640, "fp8", 16, 8),
    TrtPdRecipe("gb200", "fp4", "0.8.1.post2", (8192, 1024), (4096,), (10, 1, 4, 4), (1, 1, 16, 16),
                "recipes/trtllm/gb200-fp4/8k1k/stp/ctx10_gen1_dep16_batch256_eplb256_mtp0.yaml",
                2, 16640, "fp8", 256, 10),
    TrtPdRecipe("gb200", "fp8", "0.8.1.post2", (1024, 1024), (6144,), (1, 1, 8, 8), (1, 1, 8, 8),
                "recipes/trtllm/gb200-fp8/1k1k/stp/ctx1_gen1_dep8_batch768_eplb0_mtp0_6144.yaml",
                16, 16384, "fp8", 768, 3),
    TrtPdRecipe("gb200", "fp8", "0.8.1.post2", (1024, 1024), (256,), (1, 1, 8, 8), (1, 1, 32, 32),
                "recipes/trtllm/gb200-fp8/1k1k/stp/ctx1_gen1_dep32_batch8_eplb0_mtp0_256.yaml",
                16, 16384, "fp8", 8, 9),
    TrtPdRecipe("gb200", "fp8", "0.8.1.post2", (1024, 1024), (27,), (1, 1, 8, 8), (3, 8, 1, 8),
                "recipes/trtllm/gb200-fp8/1k1k/stp/ctx1_gen3_tep8_batch8_eplb0_mtp0_27.yaml",
                16, 16384, "fp8", 8, 7),
    TrtPdRecipe("gb200", "fp8", "0.8.1.post2", (1024, 1024), (3,), (1, 1, 8, 8), (3, 8, 1, 8),
                "recipes/trtllm/gb200-fp8/1k1k/stp/ctx1_gen3_tep8_batch1_eplb0_mtp0_3.yaml",
                16, 16384, "fp8", 1, 7),
    TrtPdRecipe("gb200", "fp8", "0.8.1.post2", (8192, 1024), (63,), (1, 1, 8, 8), (3, 8, 1, 8),
                "recipes/trtllm/gb200-fp8/8k1k/stp/ctx1_gen3_tep8_batch16_eplb0_mtp0_63.yaml",
                2, 16384, "fp8", 16, 7),
    TrtPdRecipe("gb200", "fp8", "0.8.1.post2", (8192, 1024), (18,), (1, 1, 8, 8), (3, 8, 1, 8),
                "recipes/trtllm/gb200-fp8/8k1k/stp/ctx1_gen3_tep8_batch4_eplb0_mtp0_18.yaml",
                2, 16384, "fp8", 4, 7),
    TrtPdRecipe("gb200", "fp8", "0.8.1.post2", (8192, 1024), (6,), (1, 1, 8, 8), (3, 8, 1, 8),
                "recipes/trtllm/gb200-fp8/8k1k/stp/ctx1_gen3_tep8_batch1_eplb0_mtp0_6.yaml",
                2, 16384, "fp8", 1, 7),
    TrtPdRecipe("gb300", "fp4", "0.8.1.post2", (1024, 1024), (12, 48, 96, 192), (1, 1, 2, 2), (4, 8, 1, 8),
                "recipes/trtllm/gb300-fp4/1k1k/stp/ctx1_gen4_tep8_batch32_eplb0_mtp0.yaml",
                16, 16384, "fp8", 32, 1),
    TrtPdRecipe("gb300", "fp4", "0.8.1.post2", (1024, 1024), (8192,), (2, 1, 2, 2), (1, 1, 8, 8),
                "recipes/trtllm/gb300-fp4/1k1k/stp/ctx2_gen1_dep8_batch1024_eplb0_mtp0.yaml",
                16, 16384, "fp8", 1024, 1),
    TrtPdRecipe("gb300", "fp4", "0.8.1.post2", (8192, 1024), (72,), (1, 1, 2, 2), (3, 8, 1, 8),
                "recipes/trtllm/gb300-fp4/8k1k/stp/ctx1_gen3_tep8_batch16_eplb0_mtp0.yaml",
                2, 16640, "fp8", 16, 1),
    TrtPdRecipe("gb300", "fp4", "0.8.1.post2", (8192, 1024), (12,), (1, 1, 2, 2), (4, 8, 1, 8),
                "recipes/trtllm/gb300-fp4/8k1k/stp/ctx1_gen4_tep8_batch2_eplb0_mtp0.yaml",
                2, 16640, "fp8", 2, 1),
    TrtPdRecipe("gb300", "fp4", "0.8.1.post2", (8192, 1024), (5, 15, 30), (1, 1, 2, 2), (5, 4, 1, 4),
                "recipes/trtllm/gb300-fp4/8k1k/stp/ctx1_gen5_tep4_batch4_eplb0_mtp0.yaml",
                2, 16640, "fp8", 4, 1),
    TrtPdRecipe("gb300", "fp4", "0.8.1.post2", (8192, 1024), (3228,), (11, 1, 2, 2), (3, 1, 4, 4),
                "recipes/trtllm/gb300-fp4/8k1k/stp/ctx11_gen3_dep4_batch256_eplb0_mtp0.yaml",
                2, 16640, "fp8", 256, 1),
    TrtPdRecipe("gb300", "fp8", "0.8.1.post2", (1024, 1024), (4,), (1, 1, 4, 4), (4, 8, 1, 8),
                "recipes/trtllm/gb300-fp8/1k1k/stp/ctx1_gen4_tep8_batch1_eplb0_mtp0_4.yaml",
                8, 8192, "fp8", 1, 1),
    TrtPdRecipe("gb300", "fp8", "0.8.1.post2", (1024, 1024), (24,), (1, 1, 4, 4), (4, 8, 1, 8),
                "recipes/trtllm/gb300-fp8/1k1k/stp/ctx1_gen4_tep8_batch4_eplb0_mtp0_24.yaml",
                8, 8192, "fp8", 4, 1),
    TrtPdRecipe("gb300", "fp8", "0.8.1.post2", (1024, 1024), (84,), (1, 1, 4, 4), (4, 8, 1, 8),
                "recipes/trtllm/gb300-fp8/1k1k/stp/ctx1_gen4_tep8_batch16_eplb0_mtp0_84.yaml",
                8, 8192, "fp8", 16, 1),
    TrtPdRecipe("gb300", "fp8", "0.8.1.post2", (1024, 1024), (12288,), (3, 1, 4, 4), (2, 1, 8, 8),
                "recipes/trtllm/gb300-fp8/1k1k/stp/ctx3_gen2_dep8_batch768_eplb0_mtp0_12288.yaml",
                8, 8192, "fp8", 768, 1),
    TrtPdRecipe("gb300", "fp8", "0.8.1.post2", (8192, 1024), (4,), (1, 1, 4, 4), (4, 8, 1, 8),
                "recipes/trtllm/gb300-fp8/8k1k/stp/ctx1_gen4_tep8_batch1_eplb0_mtp0_4.yaml",
                2, 8232, "fp8", 1, 1),
    TrtPdRecipe("gb300", "fp8", "0.8.1.post2", (8192, 1024), (24,), (1, 1, 4, 4), (4, 8, 1, 8),
                "recipes/trtllm/gb300-fp8/8k1k/stp/ctx1_gen4_tep8_batch4_eplb0_mtp0_24.yaml",
                2, 8232, "fp8", 4, 1),
    TrtPdRecipe("gb300", "fp8", "0.8.1.post2", (8192, 1024), (36,), (1, 1, 4, 4), (4, 8, 1, 8),
                "recipes/trtllm/gb300-fp8/8k1k/stp/ctx1_gen4_tep8_batch8_eplb0_mtp0_36.yaml",
                2, 8232, "fp8", 8, 1),
    TrtPdRecipe("gb300", "fp8", "0.8.1.post2", (8192, 1024), (512,), (6, 1, 4, 4), (1, 1, 32, 32),
                "recipes/trtllm/gb300-fp8/8k1k/stp/ctx6_gen1_dep32_batch16_eplb0_mtp0_512.yaml",
                2, 8232, "fp8", 16, 1),
    TrtPdRecipe("gb200", "fp4", "0.8.1.post2", (1024, 8192), (7,), (1, 1, 4, 4), (7, 8, 1, 8),
                "recipes/trtllm/gb200-fp4/1k8k/stp/ctx1_gen7_tep8_batch1_eplb0_mtp0.yaml",
                16, 16384, "fp8", 1, 10, source=TRT_PD_SOURCE_OLDER),
    TrtPdRecipe("gb200", "fp4", "0.8.1.post2", (1024, 8192), (60,), (1, 1, 4, 4), (15, 4, 1, 4),
                "recipes/trtllm/gb200-fp4/1k8k/stp/ctx1_gen15_tep4_batch4_eplb0_mtp0.yaml",
                16, 16384, "fp8", 4, 10, source=TRT_PD_SOURCE_OLDER),
    TrtPdRecipe("gb200", "fp4", "0.8.1.post2", (1024, 8192), (135,), (1, 1, 4, 4), (15, 4, 1, 4),
                "recipes/trtllm/gb200-fp4/1k8k/stp/ctx1_gen15_tep4_batch8_eplb0_mtp0.yaml",
                16, 16384, "fp8", 8, 10, source=TRT_PD_SOURCE_OLDER),
    TrtPdRecipe("gb200", "fp4", "0.8.1.post2", (1024, 8192), (2048,), (1, 1, 4, 4), (1, 1, 32, 32),
                "recipes/trtllm/gb200-fp4/1k8k/stp/ctx1_gen1_dep32_batch64_eplb0_mtp0.yaml",
                16, 16384, "fp8", 64, 8, source=TRT_PD_SOURCE_OLDER),
    TrtPdRecipe("gb200", "fp4", "0.8.1.post2", (1024, 8192), (4096,), (1, 1, 4, 4), (1, 1, 32, 32),
                "recipes/trtllm/gb200-fp4/1k8k/stp/ctx1_gen1_dep32_batch128_eplb288_mtp0.yaml",
                16, 16384, "fp8", 128, 8, source=TRT_PD_SOURCE_OLDER),
    TrtPdRecipe("gb200", "fp4", "0.8.1.post2", (1024, 8192), (8192,), (1, 1, 4, 4), (1, 1, 32, 32),
                "recipes/trtllm/gb200-fp4/1k8k/stp/ctx1_gen1_dep32_batch256_eplb288_mtp0.yaml",
                16, 16384, "fp8", 256, 8, source=TRT_PD_SOURCE_OLDER),
    TrtPdRecipe("gb200", "fp8", "0.8.1.post2", (1024, 8192), (8192,), (1, 1, 8, 8), (2, 1, 16, 16),
                "recipes/trtllm/gb200-fp8/1k8k/stp/ctx1_gen2_dep16_batch256_eplb0_mtp0_8192.yaml",
                16, 16384, "fp8", 256, 9, source=TRT_PD_SOURCE_OLDER),
    TrtPdRecipe("gb200", "fp8", "0.8.1.post2", (1024, 8192), (2048,), (1, 1, 8, 8), (1, 1, 32, 32),
                "recipes/trtllm/gb200-fp8/1k8k/stp/ctx1_gen1_dep32_batch64_eplb0_mtp0_2048.yaml",
                16, 16384, "fp8", 64, 9, source=TRT_PD_SOURCE_OLDER),
    TrtPdRecipe("gb200", "fp8", "0.8.1.post2", (1024, 8192), (36,), (1, 1, 8, 8), (4, 8, 1, 8),
                "recipes/trtllm/gb200-fp8/1k8k/stp/ctx1_gen4_tep8_batch8_eplb0_mtp0_36.yaml",
                16, 16384, "fp8", 8, 9, source=TRT_PD_SOURCE_OLDER),
    TrtPdRecipe("gb200", "fp8", "0.8.1.post2", (1024, 8192), (4,), (1, 1, 8, 8), (4, 8, 1, 8),
                "recipes/trtllm/gb200-fp8/1k8k/stp/ctx1_gen4_tep8_batch1_eplb0_mtp0_4.yaml",
                16, 16384, "fp8", 1, 9, source=TRT_PD_SOURCE_OLDER),
    TrtPdRecipe("gb300", "fp4", "0.8.1.post2", (1024, 8192), (7,), (1, 1, 2, 2), (7, 8, 1, 8),
                "recipes/trtllm/gb300-fp4/1k8k/stp/ctx1_gen7_tep8_batch1_eplb0_mtp0.yaml",
                16, 16384, "fp8", 1, 1, source=TRT_PD_SOURCE_OLDER),
    TrtPdRecipe("gb300", "fp4", "0.8.1.post2", (1024, 8192), (60,), (1, 1, 2, 2), (15, 4, 1, 4),
                "recipes/trtllm/gb300-fp4/1k8k/stp/ctx1_gen15_tep4_batch4_eplb0_mtp0.yaml",
                16, 16384, "fp8", 4, 1, source=TRT_PD_SOURCE_OLDER),
    TrtPdRecipe("gb300", "fp4", "0.8.1.post2", (1024, 8192), (245,), (1, 1, 2, 2), (7, 8, 1, 8),
                "recipes/trtllm/gb300-fp4/1k8k/stp/ctx1_gen7_tep8_batch32_eplb0_mtp0.yaml",
                16, 16384, "fp8", 32, 1, source=TRT_PD_SOURCE_OLDER),
    TrtPdRecipe("gb300", "fp4", "0.8.1.post2", (1024, 8192), (1024,), (1, 1, 2, 2), (1, 1, 32, 32),
                "recipes/trtllm/gb300-fp4/1k8k/stp/ctx1_gen1_dep32_batch32_eplb0_mtp0.yaml",
                16, 16384, "fp8", 32, 1, source=TRT_PD_SOURCE_OLDER),
    TrtPdRecipe("gb300", "fp4", "0.8.1.post2", (1024, 8192), (4096,), (1, 1, 2, 2), (1, 1, 32, 32),
                "recipes/trtllm/gb300-fp4/1k8k/stp/ctx1_gen1_dep32_batch128_eplb288_mtp0.yaml",
                16, 16384, "fp8", 128, 1, source=TRT_PD_SOURCE_OLDER),
    TrtPdRecipe("gb300", "fp4", "0.8.1.post2", (1024, 8192), (8192,), (1, 1, 2, 2), (1, 1, 32, 32),
                "recipes/trtllm/gb300-fp4/1k8k/stp/ctx1_gen1_dep32_batch256_eplb288_mtp0.yaml",
                16, 16384, "fp8", 256, 1, source=TRT_PD_SOURCE_OLDER),
)
# fmt: on


def trtllm_pd_recipe(row: SiliconRow) -> TrtPdRecipe | None:
    """The InferenceMAX entry (and srt-slurm recipe) a disaggregated TensorRT-LLM row ran, or None."""
    if row.backend != "trtllm" or row.mode != "disagg":
        return None
    return find_entry(TRTLLM_PD_RECIPES, row)
