"""Disaggregated TensorRT-LLM rows -> the InferenceMAX entry and srt-slurm recipe they ran, and the context server's
step limits the twin takes from it (silicon_trtllm_recipes.TRTLLM_PD_RECIPES)."""

from silicon_rows import disagg, write

from cloudmatrix.validate import silicon_translate as T
from cloudmatrix.validate.silicon_csv import deduplicate, read_rows
from cloudmatrix.validate.silicon_trtllm_recipes import TRTLLM_PD_RECIPES, trtllm_pd_recipe


def point(tmp_path, row):
    (m,) = deduplicate(read_rows(write(tmp_path / "s.csv", [row])))
    return m


def b200_fp4_max_throughput(conc=2192, version="0.8.1.post1", isl=1024):
    """dsr1_b200_trtllm_fp4_disagg_1024x1024_c2192_cfg346's layout: one 4-rank attention-DP context worker (EP4),
    two 8-rank attention-DP decode workers (EP8) of batch 128."""
    row = disagg("b2", conc=conc, p_workers=1, p=(1, 4, 1, 4), d_workers=2, d=(1, 8, 1, 8), d_batch=128, isl=isl)
    row.update(system="b200_sxm", backend="trtllm", backend_version=version, precision="fp4",
               gemm_quant_mode="nvfp4", moe_quant_mode="nvfp4")  # fmt: skip
    return row


def test_a_matched_row_batches_prompts_as_its_context_server_does(tmp_path):
    m = point(tmp_path, b200_fp4_max_throughput())
    recipe = trtllm_pd_recipe(m.row)
    assert recipe is not None and recipe.recipe.endswith("b200-fp4/1k1k/stp/ctx1_gen2_dep8_batch128_eplb0_mtp0.yaml")
    assert (recipe.ctx_max_batch, recipe.ctx_max_tokens) == (8, 10240)  # the recipe's prefill server
    tr = T.translate(m)
    # 8 whole 1,024-token prompts per rank (max_batch_size binds before max_num_tokens), 4 ranks on 4 dies
    assert tr.scenario.prefill.tokens_per_die == 8 * 1024
    assert "8,192 prompt tokens per rank" in tr.deployment and "ctx1_gen2_dep8_batch128" in tr.deployment


def test_the_token_cap_binds_for_long_prompts():
    # an 8k1k entry allows 2 prompts but 16,640-16,896 tokens per rank: two 8,192-token prompts fit
    name = "b200-fp4/8k1k/stp/ctx1_gen5_tep8_batch8_eplb0_mtp0.yaml"
    e = next(r for r in TRTLLM_PD_RECIPES if r.recipe.endswith(name))
    assert e.step_tokens(8192) == 2 * 8192
    assert e.step_tokens(16384) == e.ctx_max_tokens  # the cap, when max_batch_size prompts would exceed it


def test_a_row_outside_every_entry_runs_tensorrt_llms_default_context_step(tmp_path):
    for row in (b200_fp4_max_throughput(conc=2000), b200_fp4_max_throughput(version="0.8.1.post9")):
        m = point(tmp_path, row)
        assert trtllm_pd_recipe(m.row) is None
        tr = T.translate(m)
        # max_num_tokens' default, 8,192 prompt tokens per rank (4 ranks on 4 dies), not the row's prefill batch of 1
        assert tr.scenario.prefill.tokens_per_die == 8192
        assert "default context step" in tr.deployment


def test_a_row_recording_the_recipes_own_concurrency_matches_it(tmp_path):
    # dsr1-fp8-h200-dynamo-trt lists conc 64 for one DP8 context worker and 9 TP8 decode workers; its recipe
    # (c64_ctx1_gen9_tep8_batch256) benchmarks 576 clients, which is what the CSV records
    row = disagg("h2", conc=576, p_workers=1, p=(1, 8, 1, 8), d_workers=9, d=(8, 1, 1, 8), d_batch=256)
    row.update(backend="trtllm", backend_version="0.8.1.post1")
    m = point(tmp_path, row)
    recipe = trtllm_pd_recipe(m.row)
    assert recipe is not None and recipe.recipe.endswith("h200/1k1k/stp/c64_ctx1_gen9_tep8_batch256_eplb0_mtp0.yaml")
    assert T.translate(m).scenario.prefill.tokens_per_die == 8 * 1024  # 8 prompts per rank, one rank per die
