"""A measured silicon point -> the twin scenario that runs it, and the reasons it is refused."""

import pytest
from silicon_rows import agg, disagg, write

from cloudmatrix.sim.scenario import PoolSpec
from cloudmatrix.validate import silicon_translate as T
from cloudmatrix.validate.silicon import base_row, predict
from cloudmatrix.validate.silicon_csv import deduplicate, read_rows


def point(tmp_path, row):
    (m,) = deduplicate(read_rows(write(tmp_path / "s.csv", [row])))
    return m


def test_agg_row_runs_colocated_closed_loop_at_its_concurrency(tmp_path):
    tr = T.translate(point(tmp_path, agg("a", conc=96, tp=1, dp=8, ep=8, batch=12, isl=2048, osl=256)))
    sc = tr.scenario
    assert sc.mode == "colocated" and sc.system == "hgx-h200" and sc.nodes == 1
    pool = sc.colocated
    assert (pool.instances, pool.dies, pool.ep, pool.attn_tp) == (1, 8, 8, 1)
    assert pool.batch_per_die == 12  # AIC's batch is per attention-DP rank = per die under DP attention
    # TRT-LLM recipe: max_num_tokens = max(8192, ceil((CONC + ISL + 64) / 64) * 64) per attention-DP rank
    assert pool.tokens_per_die == 8192 and pool.chunked_prefill is False
    assert sc.precision.kv_cache == "fp8"  # kv_cache_config dtype fp8
    assert pool.balance_timeout == 60  # DP_ATTENTION=true: attention_dp_config enable_balance, timeout_iters 60
    assert (pool.redundant_experts, pool.shared_expert_dies, pool.microbatches) == (0, 0, 1)
    assert sc.precision.weights == "fp8" and sc.mtp.depth == 0
    assert "EP8" in tr.deployment and "96 clients" in tr.deployment


def test_the_row_is_run_with_the_clients_protocol(tmp_path):
    # InferenceMAX's benchmark_serving: --num-prompts 10 x CONC, --random-range-ratio 0.8 (lengths drawn
    # as randint(int(0.8 L), L + 1)), and the mean over every request from an idle server
    tr = T.translate(point(tmp_path, agg("a", conc=96, tp=1, dp=8, ep=8, batch=12, isl=2048, osl=255)))
    w = tr.scenario.workload
    assert (w.kind, w.concurrency, w.num_requests) == ("closed", 96, 960)
    assert (w.input_len.kind, w.input_len.lo, w.input_len.hi) == ("uniform", 1638, 2048)
    assert (w.output_len.kind, w.output_len.lo, w.output_len.hi) == ("uniform", 204, 255)
    assert (tr.measure_from, tr.measure_to) == (0, 960)  # no warm-up window: all 960 requests counted


def test_disagg_row_gets_both_pools_with_their_worker_counts(tmp_path):
    row = disagg("d", conc=512, p_workers=3, p=(1, 4, 1, 4), d_workers=2, d=(1, 16, 1, 16), d_batch=16, isl=8192)
    sc = T.translate(point(tmp_path, row)).scenario
    assert sc.mode == "disaggregated"
    assert (sc.prefill.instances, sc.prefill.dies, sc.prefill.ep) == (3, 4, 4)
    assert sc.prefill.tokens_per_die == 8192  # one prompt per attention-DP rank
    assert (sc.decode.instances, sc.decode.dies, sc.decode.ep, sc.decode.batch_per_die) == (2, 16, 16, 16)
    assert sc.nodes == 6  # 3 x 4 + 2 x 16 = 44 GPUs on 8-GPU nodes


def test_fp4_rows_run_fp4_weights(tmp_path):
    sc = T.translate(point(tmp_path, agg("f", precision="fp4", system="b200_sxm"))).scenario
    assert sc.precision.weights == "fp4" and sc.system == "hgx-b200"


@pytest.mark.parametrize(
    "row, reason",
    [
        (disagg("nw", p_workers=None, d_workers=None), T.INCOMPLETE),
        (agg("nc", conc=None), T.NO_CONCURRENCY),
        (agg("bad", tp=1, dp=8, moe_tp=1, ep=4), T.INCONSISTENT),
        (agg("sys", system="a100_sxm"), T.SYSTEM_UNMAPPED),
        (agg("prec", precision="int4_wo"), T.PRECISION),
    ],
)
def test_refusal_reasons(tmp_path, row, reason):
    with pytest.raises(T.Refused) as e:
        T.translate(point(tmp_path, row))
    assert e.value.reason == reason


def test_system_missing_from_the_catalog_is_a_reason(tmp_path, monkeypatch):
    monkeypatch.setitem(T.TWIN_SYSTEMS, "h200_sxm", "hgx-not-there")
    with pytest.raises(T.Refused) as e:
        T.translate(point(tmp_path, agg("a")))
    assert e.value.reason == T.SYSTEM_MISSING and "hgx-not-there" in e.value.detail


def test_attention_tp_is_refused_only_while_the_decode_step_ignores_it(tmp_path, monkeypatch):
    m = point(tmp_path, agg("tp", tp=8, dp=1, moe_tp=1, ep=8, batch=16))
    monkeypatch.setattr(T, "decode_reads_attn_tp", lambda system: False)
    with pytest.raises(T.Refused) as e:
        T.translate(m)
    assert e.value.reason == T.ATTN_TP
    monkeypatch.setattr(T, "decode_reads_attn_tp", lambda system: True)
    pool = T.translate(m).scenario.colocated
    assert (pool.dies, pool.attn_tp, pool.batch_per_die) == (8, 8, 2)  # 16 sequences shared by 8 dies


def test_attention_tp_probe_matches_the_cost_model():
    from cloudmatrix.perf import Deployment, decode_step
    from cloudmatrix.specs.hardware import load_system
    from cloudmatrix.specs.model import load_model

    system, model = load_system("hgx-h200"), load_model(T.TWIN_MODEL)
    dep = Deployment(dies=8, ep=8)
    same = decode_step(model, system, dep, 8, 2048, check_memory=False).step_time == pytest.approx(
        decode_step(model, system, dep.with_(attn_tp=8), 8, 2048, check_memory=False).step_time, rel=1e-9
    )
    assert T.decode_reads_attn_tp("hgx-h200") is (not same)


def test_moe_tp_follows_what_the_scenario_accepts(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "decode_reads_attn_tp", lambda system: True)
    m = point(tmp_path, agg("mt", tp=8, dp=1, moe_tp=2, ep=4, batch=8))
    if "moe_tp" in PoolSpec.model_fields:  # the twin has learned MoE TP: the row must carry it
        assert T.translate(m).scenario.colocated.moe_tp == 2
    else:
        with pytest.raises(T.Refused) as e:
            T.translate(m)
        assert e.value.reason == T.MOE_TP


@pytest.mark.parametrize(
    "message, reason",
    [
        ("colocated.moe_tp: Extra inputs are not permitted", T.MOE_TP),
        ("[decode] batch_per_die = 64 does not fit: at this workload's mean context ...", T.NO_FIT),
        ("a decode instance holds 1,000 KV tokens but the longest request needs 9,000", T.NO_FIT),
        ("scenario 'x' uses 96 dies (colocated 1 x 96) but gb200-nvl72 has 72; shrink the pools", T.TOO_LARGE),
        ("[colocated]: attention TP degree 36 must divide deepseek-r1's 128 heads", T.ATTN_TP_HEADS),
        ("something new the twin says", T.REJECTED),
    ],
)
def test_classify_the_twins_own_words(message, reason):
    assert T.classify(message) == reason


def test_a_batch_the_twin_cannot_hold_is_refused_with_its_reason(tmp_path):
    row = predict(point(tmp_path, agg("big", conc=8192, batch=1024, isl=8192, osl=8192)))
    assert row.refused == T.NO_FIT and row.predicted == {}
    assert "does not fit" in row.detail


def test_predict_averages_every_request_the_client_sent(tmp_path):
    import numpy as np

    from cloudmatrix.sim.simulation import run_scenario

    m = point(tmp_path, agg("small", conc=4, batch=1, isl=256, osl=32))
    rec = run_scenario(T.translate(m).scenario).records
    ttft, tpot = np.asarray(rec.ttft), np.asarray(rec.tpot)
    assert len(ttft) == 40 and ttft[:4].mean() > ttft[4:].mean()  # the cold burst is in the run
    row = predict(m)
    assert row.predicted["ttft"] == pytest.approx(ttft.mean(), rel=1e-12)
    assert row.predicted["tpot"] == pytest.approx(tpot.mean(), rel=1e-12)


def test_predict_simulates_the_measured_wave(tmp_path):
    row = predict(point(tmp_path, agg("small", conc=4, batch=1, isl=256, osl=32, ttft=100, tpot=10)))
    assert row.refused is None and row.route == "simulation"
    assert row.predicted["ttft"] > 0 and row.predicted["tpot"] > 0
    assert row.error("tpot") == pytest.approx(row.predicted["tpot"] / 0.010 - 1)
    assert row.slice == "h200_sxm trtllm agg" and row.tag == "validation"


def _row(tmp_path, backend, **kw):
    r = agg("r", **kw)
    r["backend"] = backend
    return T.translate(point(tmp_path, r)).scenario


def test_trtllm_step_budget_holds_the_clients_decode_tokens_and_one_prompt(tmp_path):
    sc = _row(tmp_path, "trtllm", conc=256, tp=8, dp=1, moe_tp=8, ep=1, batch=256, isl=8192, osl=1024)
    pool = sc.colocated
    # ceil((256 + 8192 + 64) / 64) * 64 = 8,512 tokens for the one rank, over its 8 dies
    assert pool.tokens_per_die * pool.dies == 8512 and not pool.chunked_prefill
    assert pool.balance_timeout is None  # no attention DP: no balancing
    assert pool.backend == "trtllm" and sc.precision.kv_cache == "fp8"


def test_sglang_h200_runs_bf16_kv_and_32k_chunks(tmp_path):
    sc = _row(tmp_path, "sglang", conc=16, tp=8, dp=1, moe_tp=8, ep=1, batch=16)
    pool = sc.colocated
    assert sc.precision.kv_cache == "bf16"  # the recipe sets no --kv-cache-dtype: SGLang's auto = BF16
    assert pool.tokens_per_die * pool.dies == 32768 and pool.chunked_prefill
    assert pool.recv_interval is None  # SGLang's default: poll every step


@pytest.mark.parametrize(
    "precision, gpus, conc, tokens, recv",
    [("fp8", 8, 32, 32768, 30), ("fp8", 8, 8, 32768, 10), ("fp8", 4, 32, 8192, 10), ("fp4", 8, 64, 16384, 30)],
)
def test_sglang_blackwell_recipes(tmp_path, precision, gpus, conc, tokens, recv):
    sc = _row(tmp_path, "sglang", system="b200_sxm", precision=precision, conc=conc, tp=gpus, dp=1, moe_tp=gpus,
              ep=1, batch=conc, isl=8192)  # fmt: skip
    pool = sc.colocated
    assert sc.precision.kv_cache == "fp8"  # --kv-cache-dtype fp8_e4m3
    assert pool.tokens_per_die * pool.dies == tokens and pool.recv_interval == recv


def test_sglang_dp_attention_divides_the_chunk(tmp_path):
    sc = _row(tmp_path, "sglang", system="b200_sxm", precision="fp4", conc=64, tp=1, dp=8, moe_tp=1, ep=8, batch=8)
    pool = sc.colocated  # 16,384 // 8 per rank: the instance's step still holds 16,384 tokens
    assert pool.tokens_per_die * pool.dies == 16384 and pool.recv_interval is None  # no skipper under DP attention


def test_disagg_rows_take_aiconfigurators_fp8_kv(tmp_path):
    sc = T.translate(point(tmp_path, disagg("d"))).scenario
    assert sc.precision.kv_cache == "fp8"



def _b200_trt(id, image, **kw):
    r = agg(id, system="b200_sxm", tp=8, dp=1, moe_tp=8, ep=1, conc=32, batch=32, **kw)
    r["backend_version"] = image.rsplit(":", 1)[-1]
    r["silicon_data_source"] += f"; image=nvcr.io/nvidia/tensorrt-llm/release:{image}"
    return r


def test_a_run_on_the_mtp_configs_image_is_refused_and_never_folded_with_a_plain_run(tmp_path):
    rows = [_b200_trt("plain", "1.2.0rc6.post2", tpot=10.0), _b200_trt("mtp", "1.2.0rc6.post3", tpot=7.0)]
    ms = {m.id: m for m in deduplicate(read_rows(write(tmp_path / "s.csv", rows)))}
    assert set(ms) == {"plain", "mtp"} and ms["plain"].repeats == 1  # two points, not one median
    assert ms["mtp"].row.mtp_run and not ms["plain"].row.mtp_run
    with pytest.raises(T.Refused) as e:
        T.translate(ms["mtp"])
    assert e.value.reason == T.MTP_RUN
    T.translate(ms["plain"])  # the plain run is expressible


def test_the_report_says_which_layouts_were_read_back_or_are_gpu_totals(tmp_path):
    from cloudmatrix.validate.silicon import base_row

    inflated = agg("run_tp8_ep8_3", system="b200_sxm", tp=64, dp=1, moe_tp=8, ep=8)
    assert "read back from the run id" in base_row(point(tmp_path, inflated)).conditions
    head = "2026_04_06_deepseek_r1_gb200_trtllm_fp4_agg"
    total = agg(f"{head}_1024x1024_c32_tp36_ep1_11", conc=32, system="gb200", tp=36, dp=1, moe_tp=36, ep=1)
    with pytest.raises(T.Refused) as e:
        T.translate(point(tmp_path, total))
    assert e.value.reason == T.INCOMPLETE and "GPU total" in e.value.detail


def test_a_row_measured_before_the_clients_warm_ups_says_so(tmp_path):
    # InferenceMAX's client gained warm-up requests on CLIENT_WARMUP_SINCE; the CSV dates each measurement
    cold = point(tmp_path, agg("cold", source="db-dump/2026-04-27; config_id=7; measured=2026-01-14T00:00:00.000Z"))
    warm = point(tmp_path, agg("warm", source=f"db-dump/2026-04-27; measured={T.CLIENT_WARMUP_SINCE}T00:00:00.000Z"))
    undated = point(tmp_path, agg("undated"))
    pd = point(tmp_path, disagg("pd", source="db-dump/2026-04-27; measured=2025-12-01T00:00:00.000Z"))
    assert (cold.row.measured_on, warm.row.measured_on, undated.row.measured_on) == ("2026-01-14", "2026-01-21", None)
    assert [T.measured_cold(m.row) for m in (cold, warm, undated, pd)] == [True, False, False, False]
    assert "before the client's warm-up requests" in base_row(cold).conditions
    assert "warm-up" not in base_row(warm).conditions
