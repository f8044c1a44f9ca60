"""Disaggregated TensorRT-LLM rows -> the InferenceMAX entry and srt-slurm recipe they ran, and the context server's
step limits the twin takes from it (silicon_trtllm_recipes.TRTLLM_PD_RECIPES)."""

from silicon_rows import disagg, write

from cloudmatrix.validate import silicon_translate as T
from cloudmatrix.validate.silicon_csv import deduplicate, read_rows
from cloudmatrix.validate.silicon_trtllm_recipes import TRT_PD_SOURCE_OLDER, TRTLLM_PD_RECIPES, trtllm_pd_recipe


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


def gb300_fp8_c24(conc=24, d_batch=6):
    """dsr1_gb300_trtllm_fp8_disagg_1024x1024_c24_cfg392's layout: one 4-rank attention-DP context worker (EP4) and
    four TP8 generation workers; the CSV records batch 6 (24 clients / 4 workers)."""
    row = disagg("g3", conc=conc, p_workers=1, p=(1, 4, 1, 4), d_workers=4, d=(8, 1, 1, 8), d_batch=d_batch)
    row.update(system="gb300", backend="trtllm", backend_version="0.8.1.post2")
    return row


def test_a_matched_row_runs_its_generation_servers_max_batch_not_the_rows(tmp_path):
    m = point(tmp_path, gb300_fp8_c24())
    recipe = trtllm_pd_recipe(m.row)
    assert recipe is not None and recipe.recipe.endswith("gb300-fp8/1k1k/stp/ctx1_gen4_tep8_batch4_eplb0_mtp0_24.yaml")
    assert recipe.gen_max_batch == 4  # the recipe's decode server: max_batch_size 4
    dec = T.translate(m).scenario.decode
    # 4 sequences per TP8 worker (16 slots for 24 clients), where the row's batch would give 6 (24 slots)
    assert (dec.batch_per_rank, dec.batch_per_die) == (4, 1)


def test_a_recipes_larger_cap_counts_only_up_to_the_concurrency(tmp_path):
    # c4_ctx1_gen9_tep8_batch256: max_batch_size 256 per TP8 generation worker; the row records 4 (36 clients / 9)
    row = disagg("h3", conc=36, p_workers=1, p=(1, 8, 1, 8), d_workers=9, d=(8, 1, 1, 8), d_batch=4)
    row.update(backend="trtllm", backend_version="0.8.1.post1")
    m = point(tmp_path, row)
    assert trtllm_pd_recipe(m.row).gen_max_batch == 256
    tr = T.translate(m)
    # no worker can hold more than all 36 clients; their KV fits
    assert (tr.scenario.decode.batch_per_rank, tr.scenario.decode.batch_per_die) == (36, 5)
    assert "the recipe's max_batch_size" in tr.deployment


def test_a_cap_above_what_the_kv_cache_holds_runs_what_it_holds(tmp_path):
    # c512_ctx3_gen1_dep8_batch512: 512 sequences per attention-DP rank of 8,192-token prompts do not fit an H200's
    # KV cache; the generation server admits only what does (TensorRT-LLM reserves each request's whole KV)
    from cloudmatrix.sim.serving_sim import decode_sequences_per_die

    row = disagg("h5", conc=512, p_workers=3, p=(8, 1, 1, 8), d_workers=1, d=(1, 8, 1, 8), d_batch=64, isl=8192)
    row.update(backend="trtllm", backend_version="0.8.1.post1")
    m = point(tmp_path, row)
    assert trtllm_pd_recipe(m.row).gen_max_batch == 512
    tr = T.translate(m)
    dec = tr.scenario.decode
    assert 64 < dec.batch_per_rank < 512  # above the row's 64 per rank, below the recipe's 512
    assert dec.batch_per_rank == dec.batch_per_die == decode_sequences_per_die(tr.scenario)
    assert "its KV cache's limit" in tr.deployment


def test_without_a_recipe_a_generation_worker_runs_the_rows_batch(tmp_path):
    m = point(tmp_path, b200_fp4_max_throughput(conc=2000))
    assert trtllm_pd_recipe(m.row) is None
    tr = T.translate(m)
    assert tr.scenario.decode.batch_per_rank == 128 and "the row's batch" in tr.deployment


def test_clients_beyond_the_recipes_slots_wait_for_a_running_request(tmp_path):
    """24 clients in a closed loop on 16 slots: 8 always wait, so (Little's law) the mean wait for a slot is 8/16 of
    the time a request holds one; on the row's 24 slots only round-robin routing collisions wait."""
    import numpy as np

    from cloudmatrix.sim.results import ttft_components
    from cloudmatrix.sim.simulation import build_simulation

    sc = T.translate(point(tmp_path, gb300_fp8_c24())).scenario
    row_slots = sc.model_copy(update={"decode": sc.decode.model_copy(update={"batch_per_rank": 6, "batch_per_die": 1})})
    waits = {}
    for name, scenario in (("recipe", sc), ("row", row_slots)):
        sim = build_simulation(scenario)
        sim.run()
        hold = float(np.mean(sim.finish - sim.admitted))
        waits[name] = (float(ttft_components(sim)["decode_slot_wait"].mean()), hold)
    wait, hold = waits["recipe"]
    assert 0.4 * hold < wait < 0.6 * hold  # 8 / 16 of a slot's holding time
    assert waits["row"][0] < 0.1 * wait


def test_a_1k8k_row_takes_the_entry_of_the_older_grid_that_listed_it(tmp_path):
    # dsr1_gb200_trtllm_fp8_disagg_1024x8192_c36_cfg378: InferenceMAX's grid of 2026-02-06 ran it with
    # ctx1_gen4_tep8_batch8 (32 slots for 36 clients); the later grid has no 1k/8k entries
    row = disagg("g2", conc=36, p_workers=1, p=(1, 8, 1, 8), d_workers=4, d=(8, 1, 1, 8), d_batch=9, osl=8192)
    row.update(system="gb200", backend="trtllm", backend_version="0.8.1.post2")
    m = point(tmp_path, row)
    recipe = trtllm_pd_recipe(m.row)
    assert recipe is not None and recipe.recipe.endswith("gb200-fp8/1k8k/stp/ctx1_gen4_tep8_batch8_eplb0_mtp0_36.yaml")
    assert recipe.source == TRT_PD_SOURCE_OLDER
    tr = T.translate(m)
    assert tr.scenario.decode.batch_per_rank == 8 and "@0aae52d4" in tr.deployment


def test_a_multi_node_job_spreads_requests_over_its_dynamo_frontends(tmp_path):
    # ctx1_gen3_tep8_batch1_eplb0_mtp0_3: 2 prefill + 6 decode nodes, multiple frontends left on (srt-slurm's
    # default): nginx on the head node, a frontend on each of the 7 others
    row = disagg("g4", conc=3, p_workers=1, p=(1, 8, 1, 8), d_workers=3, d=(8, 1, 1, 8), d_batch=1)
    row.update(system="gb200", backend="trtllm", backend_version="0.8.1.post2")
    m = point(tmp_path, row)
    assert trtllm_pd_recipe(m.row).frontends == 7
    tr = T.translate(m)
    assert tr.scenario.frontend.routers == 7 and "7 Dynamo frontends" in tr.deployment
    # ctx1_gen4_tep8_batch4_eplb0_mtp0_24 sets enable_multiple_frontends: false: one router, one rotation
    assert T.translate(point(tmp_path, gb300_fp8_c24())).scenario.frontend.routers == 1


def test_the_frontend_count_follows_srt_slurms_topology_rule():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).parents[2] / "benchmarks" / "recipes_trtllm_pd.py"
    spec = importlib.util.spec_from_file_location("recipes_trtllm_pd", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def job(p, d, **fe):
        return {"resources": {"prefill_nodes": p, "decode_nodes": d}, "frontend": fe}

    assert mod.frontends(job(1, 0)) == 1  # one node: one frontend, no nginx
    assert mod.frontends(job(1, 1)) == 1  # nginx on the head, a frontend on the other node
    assert mod.frontends(job(2, 6)) == 7
    assert mod.frontends(job(4, 12)) == 10  # at most num_additional_frontends (9) + 1
    assert mod.frontends(job(4, 12, num_additional_frontends=2)) == 3
    assert mod.frontends(job(2, 6, enable_multiple_frontends=False)) == 1
