"""Behaviour of the decode and prefill step models: directions, invariants and errors."""

import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf import Deployment, decode_step, prefill_step
from cloudmatrix.perf.comm import fabric_for_group
from cloudmatrix.perf.deployment import default_expert_layout, precisions_for
from cloudmatrix.specs.hardware import load_system
from cloudmatrix.specs.model import load_model

R1 = load_model("deepseek-r1")
CM = load_system("cloudmatrix384")
DECODE = Deployment(
    dies=320, shared_expert_dies=32, redundant_experts=32, microbatches=2, mtp_depth=1, mtp_acceptance=0.7
)
PREFILL = Deployment(dies=32, redundant_experts=32, microbatches=2, mtp_depth=1, mtp_acceptance=0.7)


def test_paper_decode_step_is_consistent():
    b = decode_step(R1, CM, DECODE, 48, 4096)
    assert b.tokens_per_seq == pytest.approx(1.7)
    assert b.tpot == pytest.approx(b.step_time / 1.7)
    assert b.tokens_per_s_per_chip == pytest.approx(96 * 1.7 / b.step_time)
    assert b.limit_time < b.step_time <= b.serial_time
    # the paper sizes the EP buffers at ~645 MiB per die for EP320 and 96 tokens
    assert b.memory["ep_buffers"] / 2**20 == pytest.approx(645, rel=0.05)
    assert sum(r.time for r in b.rows) == pytest.approx(b.serial_time)


def test_decode_more_batch_more_throughput_and_latency():
    small = decode_step(R1, CM, DECODE, 8, 4096)
    big = decode_step(R1, CM, DECODE, 48, 4096)
    assert big.tokens_per_s_per_chip > small.tokens_per_s_per_chip
    assert big.tpot > small.tpot


def test_decode_longer_context_is_slower():
    assert decode_step(R1, CM, DECODE, 32, 8192).step_time > decode_step(R1, CM, DECODE, 32, 1024).step_time


def test_mtp_acceptance_raises_tokens_per_step():
    lo = decode_step(R1, CM, DECODE.with_(mtp_acceptance=0.0), 32, 4096)
    hi = decode_step(R1, CM, DECODE.with_(mtp_acceptance=0.9), 32, 4096)
    assert hi.step_time == pytest.approx(lo.step_time)
    assert hi.tokens_per_s_per_chip == pytest.approx(lo.tokens_per_s_per_chip * 1.9 / 1.0)


def test_bf16_weights_are_slower_than_int8():
    bf16 = DECODE.with_(precision=precisions_for("bf16"))
    assert decode_step(R1, CM, bf16, 32, 4096).step_time > decode_step(R1, CM, DECODE, 32, 4096).step_time


def test_imbalance_slows_the_expert_stage():
    base = prefill_step(R1, CM, PREFILL, 8192, 4096)
    skew = prefill_step(R1, CM, PREFILL.with_(imbalance=1.5), 8192, 4096)
    assert skew.step_time > base.step_time
    experts = {r.name: r.time for r in skew.rows if r.group == "moe_layer"}["routed_experts"]
    experts0 = {r.name: r.time for r in base.rows if r.group == "moe_layer"}["routed_experts"]
    assert experts == pytest.approx(experts0 * 1.5, rel=0.02)


def test_prefill_longer_prompts_cost_more_per_token():
    short = prefill_step(R1, CM, PREFILL, 8192, 1024)
    long = prefill_step(R1, CM, PREFILL, 8192, 8192)
    assert long.tokens_per_s_per_chip < short.tokens_per_s_per_chip


def test_two_microbatches_hide_prefill_communication():
    one = prefill_step(R1, CM, PREFILL.with_(microbatches=1), 8192, 4096)
    two = prefill_step(R1, CM, PREFILL, 8192, 4096)
    assert two.step_time < one.step_time


def test_hgx_ep32_crosses_nodes_and_nvl72_does_not():
    hgx, nvl = load_system("hgx-h800"), load_system("gb200-nvl72")
    assert fabric_for_group(hgx, 8).name == hgx.spec.scale_up.name
    assert fabric_for_group(hgx, 32).name == hgx.spec.scale_out.name
    assert fabric_for_group(nvl, 72).name == nvl.spec.scale_up.name


def test_default_expert_layouts_follow_the_paper():
    assert default_expert_layout(R1, 320) == (32, 32)
    assert default_expert_layout(R1, 32) == (0, 32)


def test_gqa_dense_model_runs():
    llama = load_model("llama-3.1-70b")
    h100 = load_system("hgx-h100")
    dep = Deployment(dies=8, attn_tp=8, precision=precisions_for("fp8"))
    b = decode_step(llama, h100, dep, 16, 2048)
    assert b.tokens_per_s_per_chip > 0
    assert not any(r.name == "dispatch" for r in b.rows)


@pytest.mark.parametrize(
    "dep,match",
    [
        (DECODE.with_(dies=1000), "has 768"),
        (DECODE.with_(redundant_experts=31), "do not divide evenly"),
        (DECODE.with_(precision=precisions_for("fp8")), "no native fp8"),
        (DECODE.with_(microbatches=3), "microbatches"),
        (DECODE.with_(imbalance=0.5), "cannot be below 1"),
    ],
)
def test_impossible_deployments_say_why(dep, match):
    with pytest.raises(CloudMatrixError, match=match):
        decode_step(R1, CM, dep, 48, 4096)


def test_too_big_a_batch_does_not_fit_and_says_by_how_much():
    with pytest.raises(CloudMatrixError, match=r"does not fit.*GB too much"):
        decode_step(R1, CM, DECODE, 400, 4096)


def test_step_cli_derives_imbalance_from_popularity():
    import subprocess
    import sys

    def run(*args):
        out = subprocess.run(
            [sys.executable, "-m", "cloudmatrix.cli.main", "step", "--phase", "prefill", "--ep", "32", "--json", *args],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        import json

        return json.loads(out.stdout)

    uniform = run()
    skewed = run("--popularity", "zipf", "--zipf-s", "1.2", "--placement", "none")
    balanced = run("--popularity", "zipf", "--zipf-s", "1.2", "--placement", "eplb")
    assert skewed["step_time_s"] > balanced["step_time_s"] >= uniform["step_time_s"] * 0.999


def test_prefill_sp_tp_sp_keeps_flops_and_adds_collectives():
    sp = prefill_step(R1, CM, PREFILL, 8192, 4096)
    tp = prefill_step(R1, CM, PREFILL.with_(attn_tp=4), 8192, 4096)
    flops = lambda b: sum(r.flops for r in b.rows)  # noqa: E731
    assert flops(tp) == pytest.approx(flops(sp), rel=1e-9)
    names = {r.name for r in tp.rows}
    assert {"sp_to_tp_all_gather", "tp_to_sp_all_to_all"} <= names
    assert not names & {r.name for r in sp.rows if "all_" in r.name}


def test_llama_prefill_with_tensor_parallel_attention_and_ffn():
    llama = load_model("llama-3.1-70b")
    h100 = load_system("hgx-h100")
    dep = Deployment(dies=8, attn_tp=8, precision=precisions_for("fp8"))
    b = prefill_step(llama, h100, dep, 4096, 2048)
    names = {r.name for r in b.rows}
    assert {"attn_all_reduce", "ffn_all_reduce"} <= names
    # 8-way TP: each GPU holds an eighth of the 70B weights (fp8) plus the BF16 embeddings and head
    assert b.memory["weights"] < 70e9 / 8 * 1.2 + 2 * llama.embedding_params() * 2
