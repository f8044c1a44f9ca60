"""The silicon CSV reader and its deduplication, on small files written here."""

import pytest
from silicon_rows import agg, disagg, write

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.validate import silicon_csv
from cloudmatrix.validate.silicon_csv import PoolLayout, deduplicate, load_silicon_set, read_rows


def test_row_is_parsed_with_its_layout_concurrency_and_seconds(tmp_path):
    (r,) = read_rows(write(tmp_path / "s.csv", [agg("a", conc=96, tp=1, dp=8, ep=8, batch=12, ttft=450, tpot=15)]))
    assert r.concurrency == 96
    assert r.agg == PoolLayout(workers=1, batch=12, tp=1, pp=1, attention_dp=8, moe_tp=1, moe_ep=8)
    assert r.ttft_s == pytest.approx(0.450) and r.tpot_s == pytest.approx(0.015)
    assert r.total_gpus == 8 and r.complete and r.consistent


def test_inflated_copies_are_read_back_to_the_worker_that_ran(tmp_path):
    rows = [
        # the same numbers three times; two copies claim TP64 (MoE TP8 x EP8 = 64 GPUs), one says TP8 + EP8
        agg("dump", tp=64, dp=1, moe_tp=8, ep=8, source="db-dump/2026-04-27"),
        agg("old", tp=8, dp=1, moe_tp=1, ep=8, source="source_file=2026-03-25.csv"),
        agg("x_tp8_ep8_929", tp=64, dp=1, moe_tp=8, ep=8, source="source_file=2026-04-06.csv"),
    ]
    (m,) = deduplicate(read_rows(write(tmp_path / "s.csv", rows)))
    assert m.row.agg == PoolLayout(workers=1, batch=8, tp=8, pp=1, attention_dp=1, moe_tp=1, moe_ep=8)
    assert m.row.total_gpus == 8 and m.row.consistent
    assert m.copies == 2 and m.repeats == 1 and set(m.ids) == {"dump", "old", "x_tp8_ep8_929"}


def test_run_id_gives_the_worker_of_an_inflated_dp_copy_and_its_batch_per_rank(tmp_path):
    # InferenceMAX `tp8_ep8` with DP attention at c256: the copy says DP64, batch 4 (= 256 / 64)
    (r,) = read_rows(write(tmp_path / "s.csv", [agg("run_tp8_ep8_12", conc=256, tp=1, dp=64, moe_tp=8, ep=8,
                                                     batch=4, system="b200_sxm")]))  # fmt: skip
    assert r.layout_from_id
    assert r.agg == PoolLayout(workers=1, batch=32, tp=1, pp=1, attention_dp=8, moe_tp=1, moe_ep=8)


def test_genuine_layouts_are_left_as_recorded(tmp_path):
    rows = [
        agg("run_tp8_ep8_1", tp=8, dp=1, moe_tp=1, ep=8, system="b200_sxm"),  # what the id says
        agg("run_tp4_ep1_2", tp=4, dp=1, moe_tp=4, ep=1, system="b200_sxm"),  # MoE TP4, no EP
        agg("nvl_cfg9", tp=64, dp=1, moe_tp=8, ep=8, system="gb200"),  # 64 GPUs exist in one NVL72 domain
        agg("hgx_moe_tp_cfg8", tp=8, dp=1, moe_tp=2, ep=4, system="b200_sxm", conc=32),  # MoE TP2 x EP4 on 8
    ]
    by = {r.id: r for r in read_rows(write(tmp_path / "s.csv", rows))}
    assert not any(r.layout_from_id for r in by.values())
    assert by["nvl_cfg9"].agg.gpus == 64 and by["hgx_moe_tp_cfg8"].agg.moe_tp == 2


def test_a_dump_copy_wider_than_an_hgx_node_is_read_back_without_a_run_id(tmp_path):
    (r,) = read_rows(write(tmp_path / "s.csv", [agg("dsr1_b300_sglang_fp4_cfg717", tp=16, dp=1, moe_tp=4, ep=4,
                                                     system="b300_sxm")]))  # fmt: skip
    assert r.layout_from_id and r.agg.gpus == 4
    assert (r.agg.tp, r.agg.moe_tp, r.agg.moe_ep) == (4, 1, 4)


def test_complete_copy_with_worker_counts_wins_and_v3_r1_labels_are_one_model(tmp_path):
    no_workers = disagg("src", p_workers=None, d_workers=None, p=(8, 1, 1, 8), d=(8, 1, 1, 8), source="source_file=x")
    no_workers["model_path"] = "deepseek-ai/DeepSeek-R1"  # the same measurement labelled R1 in one dump, V3 in another
    complete = disagg("db", p_workers=3, d_workers=1)
    (m,) = deduplicate(read_rows(write(tmp_path / "s.csv", [no_workers, complete])))
    assert m.row.id == "db"
    assert m.row.prefill.workers == 3 and m.row.complete


def test_repeats_of_one_point_become_their_median(tmp_path):
    rows = [agg("r1", tpot=10.0, ttft=400), agg("r2", tpot=14.0, ttft=700), agg("r3", tpot=30.0, ttft=500),
            agg("other", tpot=10.0, conc=128)]  # fmt: skip
    ms = deduplicate(read_rows(write(tmp_path / "s.csv", rows)))
    assert len(ms) == 2
    point = next(m for m in ms if m.row.concurrency == 64)
    assert point.repeats == 3 and point.copies == 0
    assert point.tpot_s == pytest.approx(0.014) and point.ttft_s == pytest.approx(0.500)


def test_missing_worker_counts_and_concurrency_are_kept_and_flagged(tmp_path):
    rows = [disagg("nw", p_workers=None, d_workers=None), agg("nc", conc=None)]
    ms = deduplicate(read_rows(write(tmp_path / "s.csv", rows)))
    by = {m.id: m.row for m in ms}
    assert not by["nw"].complete and by["nw"].prefill.workers is None
    assert by["nc"].concurrency is None


def test_other_models_are_counted_outside_the_suite(tmp_path):
    rows = [agg("ds"), agg("llama", model="meta-llama/Llama-3.1-70B"), agg("llama2", model="meta-llama/Llama-3.1-70B")]
    s = load_silicon_set(write(tmp_path / "s.csv", rows))
    assert (s.rows_read, s.deepseek_rows) == (3, 1)
    assert s.other_models == {"meta-llama/Llama-3.1-70B": 2}
    assert [m.id for m in s.measurements] == ["ds"]


def test_not_a_silicon_csv_is_a_one_line_error(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(CloudMatrixError, match="not a silicon_sample CSV"):
        read_rows(p)


def test_missing_extra_names_the_install_command(monkeypatch):
    def no_package(name):
        raise ModuleNotFoundError(name)

    monkeypatch.setattr(silicon_csv.resources, "files", no_package)
    with pytest.raises(CloudMatrixError, match=r"pip install 'cloudmatrix\[validate\]'"):
        silicon_csv.installed_csv_path()


def test_a_tp_n_series_with_an_n_no_head_count_allows_is_read_as_gpu_totals(tmp_path):
    head = "2026_04_06_deepseek_r1_gb200_trtllm_fp4"
    rows = [
        agg(f"{head}_agg_8192x1024_c538_tp64_ep1_113", conc=538, tp=64, dp=1, moe_tp=64, ep=1, system="gb200"),
        agg(f"{head}_agg_1024x1024_c32_tp36_ep1_11", conc=32, tp=36, dp=1, moe_tp=36, ep=1, system="gb200"),
        # an HGX series whose every TP divides the 128 heads: what it says
        agg("2026_04_06_deepseek_r1_b200_sxm_sglang_fp8_agg_1024x1024_c4_tp8_ep1_7", conc=4, tp=8, dp=1, moe_tp=8,
            ep=1, system="b200_sxm"),  # fmt: skip
    ]
    by = {m.id.split("_")[-1]: m.row for m in deduplicate(read_rows(write(tmp_path / "s.csv", rows)))}
    assert by["113"].gpu_total and not by["113"].complete  # TP64 divides 128, but its series has TP36
    assert by["11"].gpu_total and not by["11"].complete
    assert not by["7"].gpu_total and by["7"].complete
