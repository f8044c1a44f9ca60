"""Disaggregated SGLang rows -> the InferenceMAX multi-node entry and srt-slurm recipe they ran, and what the twin
takes from it (silicon_recipes.PD_RECIPES)."""

from silicon_rows import disagg, write

from cloudmatrix.validate import silicon_translate as T
from cloudmatrix.validate.silicon_csv import deduplicate, read_rows
from cloudmatrix.validate.silicon_recipes import PD_RECIPES, pd_recipe


def point(tmp_path, row):
    (m,) = deduplicate(read_rows(write(tmp_path / "s.csv", [row])))
    return m


def gb200_low_latency(conc=4, version="0.5.8.post1", **kw):
    """dsr1_gb200_sglang_fp8_disagg_1024x1024_c4_cfg502's layout: 1 prefill and 1 decode worker at TP4."""
    row = disagg("ll", conc=conc, p_workers=1, p=(4, 1, 4, 1), d_workers=1, d=(4, 1, 4, 1), d_batch=conc, **kw)
    row.update(system="gb200", backend_version=version)
    return row


def test_a_gb200_low_latency_row_runs_its_recipes_decode_recv_interval(tmp_path):
    m = point(tmp_path, gb200_low_latency())
    recipe = pd_recipe(m.row)
    assert recipe is not None and recipe.recipe == "recipes/gb200-fp8/1k1k/low-latency.yaml"
    tr = T.translate(m)
    assert tr.scenario.decode.recv_interval == 10  # scheduler-recv-interval: 10 on the decode server
    assert tr.scenario.prefill.recv_interval is None  # the prefill server's 10 is recorded, not simulated
    assert tr.scenario.precision.kv_cache == "fp8"  # kv-cache-dtype: fp8_e4m3
    assert "low-latency.yaml" in tr.deployment and "recv every 10 decode steps" in tr.deployment


def test_a_row_outside_the_entry_keeps_the_default_intake(tmp_path):
    for row in (gb200_low_latency(conc=16), gb200_low_latency(version="0.5.5.post2")):  # not in conc-list / image
        m = point(tmp_path, row)
        assert pd_recipe(m.row) is None
        assert T.translate(m).scenario.decode.recv_interval is None


def test_a_recipe_that_polls_every_step_on_decode_sets_nothing(tmp_path):
    # gb300-fp8 1k1k stp low-latency: scheduler-recv-interval 10 on the prefill server, 1 on the decode server
    row = disagg("g3", conc=8, p_workers=1, p=(4, 1, 4, 1), d_workers=4, d=(4, 1, 4, 1), d_batch=2)
    row.update(system="gb300", backend_version="0.5.8.post1")
    m = point(tmp_path, row)
    assert pd_recipe(m.row).recipe == "recipes/gb300-fp8/1k1k/stp/low-latency.yaml"
    assert T.translate(m).scenario.decode.recv_interval is None


def test_the_h200_recipe_leaves_kv_at_auto(tmp_path):
    # recipes/h200/8k1k/bs128-1p1d-dep.yaml sets no kv-cache-dtype: SGLang's auto = BF16 for the FP8 checkpoint
    row = disagg("h", conc=64, p_workers=1, p=(8, 1, 8, 1), d_workers=1, d=(1, 8, 1, 8), d_batch=8, isl=8192)
    row.update(backend_version="0.5.8.post1")
    m = point(tmp_path, row)
    assert pd_recipe(m.row) is not None
    assert T.translate(m).scenario.precision.kv_cache == "bf16"


def test_the_prefill_server_batches_up_to_its_step_budget(tmp_path):
    # low-latency.yaml's prefill server: TP4 (no DP attention), chunked-prefill-size 8192, max-prefill-tokens unset
    # (SGLang's 16,384): 8,192 prompt tokens per step over its 4 dies, where the CSV's batch of 1 gave one prompt
    m = point(tmp_path, gb200_low_latency())
    recipe = pd_recipe(m.row)
    assert (recipe.prefill_chunk, recipe.prefill_max_tokens) == (8192, 16384)
    assert recipe.prefill_step_tokens() == 8192
    assert T.translate(m).scenario.prefill.tokens_per_die == 8192 // 4


def test_under_dp_attention_the_chunk_is_divided_by_the_dp_size():
    # gb200-fp8 1k1k max-tpt: two DP8 prefill workers, chunked-prefill-size 131,072 -> 16,384 per rank, which the
    # default max-prefill-tokens (16,384) also allows
    e = next(r for r in PD_RECIPES if r.recipe == "recipes/gb200-fp8/1k1k/max-tpt.yaml")
    assert e.prefill[2] == 8 and e.prefill_chunk == 131072
    assert e.prefill_step_tokens() == 16384


def b200_fp8_maxtpt(conc, d_batch):
    """dsr1_b200_sglang_fp8_disagg_8192x1024_c288_cfg641's layout: a DP8 prefill worker, a DP8 / EP8 decode worker."""
    row = disagg("mt", conc=conc, p_workers=1, p=(1, 8, 8, 1), d_workers=1, d=(1, 8, 1, 8), d_batch=d_batch, isl=8192)
    row.update(system="b200_sxm", backend_version="0.5.8.post1")
    return row


def test_a_decode_server_runs_no_more_than_its_max_running_requests_per_dp_rank(tmp_path):
    # recipes/b200-fp8/8k1k_stp_maxtpt_1.yaml: decode max-running-requests 256 over 8 DP ranks = 32 each, below the
    # CSV's batch of 36 (288 clients / 8 ranks): 32 clients wait for a running request to finish
    m = point(tmp_path, b200_fp8_maxtpt(288, 36))
    recipe = pd_recipe(m.row)
    assert recipe.recipe == "recipes/b200-fp8/8k1k_stp_maxtpt_1.yaml" and recipe.decode_max_running == 256
    assert recipe.decode_slots_per_rank() == 32
    tr = T.translate(m)
    assert tr.scenario.decode.batch_per_rank == 32
    assert "max-running-requests" in tr.deployment


def test_a_cap_above_the_rows_batch_leaves_the_rows_batch(tmp_path):
    # the same recipe at 160 clients: 20 per rank, under the cap of 32
    tr = T.translate(point(tmp_path, b200_fp8_maxtpt(160, 20)))
    assert tr.scenario.decode.batch_per_die == 20 and tr.scenario.decode.batch_per_rank is None  # one die per rank
    assert "max-running-requests" not in tr.deployment


def test_a_recipe_without_the_key_caps_nothing():
    # gb200-fp4 8k1k low-latency leaves max-running-requests unset: SGLang sizes it from the KV cache
    e = next(r for r in PD_RECIPES if r.recipe == "recipes/gb200-fp4/8k1k/low-latency.yaml")
    assert e.decode_max_running is None and e.decode_slots_per_rank() is None
