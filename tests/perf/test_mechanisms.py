"""Mechanisms of the step model: distinct experts, attention TP, MoE TP, precision per op class,
EP synchronisation at the microbatch's tokens, hierarchical prefill dispatch."""

from dataclasses import replace

import pytest

from cloudmatrix.perf import decode_step, prefill_step
from cloudmatrix.perf.deployment import build_deployment, precisions_for
from cloudmatrix.perf.expert_load import uniform_distinct_per_die
from cloudmatrix.serving.eplb import ExpertPlacement, popularity
from cloudmatrix.specs.hardware import load_system
from cloudmatrix.specs.model import load_model

R1 = load_model("deepseek-r1")
CM = load_system("cloudmatrix384")
B200 = load_system("hgx-b200")


def _row(b, name, group="moe_layer"):
    return next(r for r in b.rows if r.name == name and r.group == group)


def test_expected_distinct_experts_formula():
    # one token hits exactly top_k of E slots; many tokens hit them all
    assert uniform_distinct_per_die(256, 256, 8, 1) == pytest.approx(8)
    assert uniform_distinct_per_die(8, 256, 8, 1e6) == pytest.approx(8)
    assert uniform_distinct_per_die(8, 256, 8, 10) == pytest.approx(8 * (1 - (1 - 8 / 256) ** 10))


def test_few_tokens_read_only_the_experts_they_hit():
    dep = build_deployment(R1, dies=8, ep=8, redundant_experts=0, precision="fp8")  # 32 experts per die
    h200 = load_system("hgx-h200")
    small = decode_step(R1, h200, dep, 1, 1024)
    big = decode_step(R1, h200, dep, 64, 1024)
    assert small.expert_load["experts_hit_per_die"] < 0.5 * big.expert_load["experts_hit_per_die"]
    # weight bytes of the routed experts follow the experts hit, not the slots held
    per_expert = 3 * R1.hidden * R1.moe_intermediate  # fp8: one byte per parameter
    read = _row(small, "routed_experts").bytes / _row(small, "routed_experts").runs
    assert read == pytest.approx(small.expert_load["experts_hit_per_die"] * per_expert, rel=0.05)


def test_mla_decode_attention_tp_splits_heads_and_replicates_the_latent_cache():
    dp = build_deployment(R1, dies=32, precision="int8")
    tp = dp.with_(attn_tp=4)
    a = decode_step(R1, CM, dp, 16, 4096, check_memory=False)
    b = decode_step(R1, CM, tp, 16, 4096, check_memory=False)
    names = {r.name for r in b.rows}
    assert {"attn_tp_reduce_scatter", "attn_tp_all_gather"} <= names
    assert not names & {"attn_tp_reduce_scatter", "attn_tp_all_gather"} & {r.name for r in a.rows}
    # attention FLOPs per die unchanged (heads / 4 over 4x the rows), cache bytes read 4x (latent shared by heads)
    assert _row(b, "attention_core").flops == pytest.approx(_row(a, "attention_core").flops)
    assert _row(b, "attention_core").bytes == pytest.approx(4 * _row(a, "attention_core").bytes, rel=0.01)
    assert b.memory["kv_cache"] == pytest.approx(4 * a.memory["kv_cache"])
    assert b.memory["weights"] < a.memory["weights"]


def test_moe_tp_shards_experts_and_adds_its_collectives():
    ep = build_deployment(R1, dies=8, ep=8, redundant_experts=0, precision="fp8")
    tp = build_deployment(R1, dies=8, ep=1, moe_tp=8, precision="fp8")
    h200 = load_system("hgx-h200")
    a = decode_step(R1, h200, ep, 32, 2048, check_memory=False)
    b = decode_step(R1, h200, tp, 32, 2048, check_memory=False)
    # routed experts: 1/8 of all 256 either way; the shared expert is split too under MoE TP
    shared = (R1.moe_layers + R1.mtp_layers) * R1.expert_params() * 7 / 8
    assert a.memory["weights"] - b.memory["weights"] == pytest.approx(shared, rel=1e-6)
    names = {r.name for r in b.rows}
    assert {"moe_tp_all_gather", "moe_tp_reduce_scatter"} <= names
    assert _row(b, "dispatch").time == 0.0  # EP 1: no all-to-all
    # the same routed FLOPs per die: 1/8 of every expert for all copies vs all of 1/8 of the experts
    assert _row(b, "routed_experts").flops == pytest.approx(_row(a, "routed_experts").flops, rel=1e-6)


def test_blackwell_fp4_keeps_attention_projections_in_fp8():
    dep = build_deployment(R1, dies=8, ep=8, redundant_experts=0, precision="fp4", system=B200)
    all_fp4 = dep.with_(precision=replace(precisions_for("fp4"), attn_proj="fp4"))
    a = decode_step(R1, B200, dep, 16, 2048)
    b = decode_step(R1, B200, all_fp4, 16, 2048)
    weights = 58 * (R1.heads * R1.kv_lora_rank * R1.v_head_dim + R1.heads * R1.v_head_dim * R1.hidden)
    saved = _row(a, "mla_epilog_o_proj").bytes - _row(b, "mla_epilog_o_proj").bytes
    assert saved == pytest.approx(0.5 * weights, rel=0.02)
    assert _row(a, "routed_experts").time == pytest.approx(_row(b, "routed_experts").time)
    assert a.memory["weights"] > b.memory["weights"]


def test_imbalance_is_taken_at_each_microbatchs_tokens():
    pop = popularity("zipf", R1.routed_experts, s=1.0)
    dep = build_deployment(R1, dies=32, microbatches=1)
    pl = ExpertPlacement.build(pop, dep.routed_dies, dep.slots_per_routed_die(R1), "eplb")
    dep = dep.with_(expert_load=pl.expert_load(R1.top_k))
    one = prefill_step(R1, CM, dep, 2048, 4096)
    two = prefill_step(R1, CM, dep.with_(microbatches=2), 2048, 4096)
    # half the tokens per microbatch: more skew on the busiest die
    assert two.expert_load["imbalance"] > one.expert_load["imbalance"] > 1.0
    assert one.expert_load["imbalance"] == pytest.approx(pl.step_imbalance(2048 * 32, R1.top_k))
    # the hot die receives more: dispatch slower than at perfect balance
    flat = prefill_step(R1, CM, dep.with_(expert_load=None), 2048, 4096)
    assert _row(one, "dispatch").time > _row(flat, "dispatch").time


def test_prefill_dispatch_across_nodes_sends_once_per_node():
    h800 = load_system("hgx-h800")
    dep = build_deployment(R1, dies=32, ep=32, redundant_experts=32, precision="fp8")
    pre = prefill_step(R1, h800, dep, 4096, 4096, check_memory=False)
    dec = decode_step(R1, h800, dep, 64, 4096, check_memory=False)
    # per token copy, prefill's hierarchical dispatch beats sending all top-k copies over RDMA
    pre_d, dec_d = _row(pre, "dispatch"), _row(dec, "dispatch")
    tokens_pre = 4096 / 1
    tokens_dec = 64 * 1
    assert pre_d.time / pre_d.runs / tokens_pre < dec_d.time / dec_d.runs / tokens_dec


def test_prefill_costs_its_vector_work():
    dep = build_deployment(R1, dies=32, microbatches=1)
    b = prefill_step(R1, CM, dep, 8192, 4096)
    names = {r.name for r in b.rows}
    assert {"token_permute", "routed_swiglu", "combine_sum", "dispatch_quant", "rope_latent_norm"} <= names
    vec = sum(r.time for r in b.rows if r.name in names and r.flops == 0 and r.bound != "comm")
    assert vec > 0.05 * b.serial_time


def test_comm_kernels_take_cores_from_the_compute_stream():
    from cloudmatrix.perf.op import comm_op, compute_op
    from cloudmatrix.perf.overlap import CommCores, layer_time

    cube = compute_op("gemm", "attn", 1, 1e12, 0.0, 1e15, 1.0, 1e12, 1.0)  # 1 ms compute
    vec = compute_op("swiglu", "attn", 1, 0.0, 1e9, 1e15, 1.0, 1e12, 1.0)  # 1 ms memory-bound vector work
    comm = comm_op("dispatch", "moe", 1, 1e9, 1.5e-3, 1e-3)
    ops = [cube, vec, comm]
    free, _ = layer_time(ops, 2, "comm-compute", 1.0, CommCores())
    vector, _ = layer_time(ops, 2, "comm-compute", 1.0, CommCores(vector_cores=True))
    sms, _ = layer_time(ops, 2, "comm-compute", 1.0, CommCores(sm_share=0.2))
    assert free == pytest.approx(2 * 2e-3)  # comm hidden behind 2 ms of compute
    assert vector == pytest.approx(2 * 2.5e-3)  # vector work and comm share the vector cores
    # 1.5 ms of comm while the GEMM runs at 80% of the cores, then the rest at full speed
    a_shared = 1e-3 / 0.8 + 1e-3
    assert sms == pytest.approx(2 * (1.5e-3 + 2e-3 * (1 - 1.5e-3 / a_shared)))


def test_a_gemm_on_a_core_share_has_the_per_core_work_of_more_rows():
    from cloudmatrix.perf.context import DieContext
    from cloudmatrix.perf.kernels import gemms

    dep = build_deployment(R1, dies=320)
    whole = DieContext(R1, CM, dep)
    split = DieContext(R1, CM, dep, {"attn": 2 / 3, "moe": 1 / 3})
    shapes = [(7168, 4096)]
    a = whole.matmul("g", "moe", 64, shapes, "experts")
    b = split.matmul("g", "moe", 64, shapes, "experts")
    assert b.flops == pytest.approx(a.flops) and b.bytes == pytest.approx(a.bytes)
    assert b.memory_time == pytest.approx(a.memory_time) and b.limit_time == pytest.approx(a.limit_time)
    # on a third of the cores: the time of a 192-row GEMM on the whole die, per 64 rows
    ref = gemms(192, shapes, "int8", CM.chip)
    assert b.time_with_share(1 / 3) == pytest.approx(max(ref.compute_time, a.memory_time) + a.latency)


def test_decode_microbatching_gains_at_the_papers_operating_point():
    """Paper §5: two-microbatch decode is CloudMatrix-Infer's choice at 96 sequences per NPU because it gains."""
    pop = popularity("uniform", R1.routed_experts)
    dep = build_deployment(R1, dies=320, mtp_depth=1, mtp_acceptance=0.7)
    pl = ExpertPlacement.build(pop, dep.routed_dies, dep.slots_per_routed_die(R1), "eplb")
    dep = dep.with_(expert_load=pl.expert_load(R1.top_k))
    one = decode_step(R1, CM, dep.with_(microbatches=1), 48, 4096)
    two = decode_step(R1, CM, dep.with_(microbatches=2), 48, 4096)
    assert two.tokens_per_s_per_chip > one.tokens_per_s_per_chip


def test_prefill_uses_the_throughput_kernels_efficiency_where_the_plane_has_one():
    from cloudmatrix.perf import comm

    h200 = load_system("hgx-h200")
    up = h200.spec.scale_up
    assert up.prefill_dispatch_efficiency is not None and up.prefill_latency is not None
    # each further 4,096 tokens cost their bytes at the prefill kernels' rate and their per-copy work, once per
    # remote destination die
    t1, _ = comm.ep_all_to_all(h200, 8, 4096, 8, 7392, "dispatch", prefill=True)
    t2, _ = comm.ep_all_to_all(h200, 8, 8192, 8, 7392, "dispatch", prefill=True)
    sent = 4096 * comm.expected_remote_dies(8, 8)
    per_copy = 7392 / comm.die_bandwidth(h200, up) / up.prefill_dispatch_efficiency + up.prefill_dispatch_per_copy
    assert t2 - t1 == pytest.approx(sent * per_copy, rel=1e-9)
    d1, _ = comm.ep_all_to_all(h200, 8, 4096, 8, 7392, "dispatch")
    d2, _ = comm.ep_all_to_all(h200, 8, 8192, 8, 7392, "dispatch")
    assert d2 - d1 == pytest.approx(4096 * 8 * 7392 * 7 / 8 / comm.die_bandwidth(h200, up) / up.dispatch_efficiency)


def test_a_whole_moe_op_fit_is_not_charged_its_permute_and_swiglu_again():
    # NVIDIA grouped-GEMM curves are fitted to TensorRT-LLM's whole MoE op (permute, GEMMs, SwiGLU, un-permute)
    dep = build_deployment(R1, dies=8, ep=8, redundant_experts=0, precision="fp8", microbatches=1)
    h200 = load_system("hgx-h200")
    gpu = {r.name for r in prefill_step(R1, h200, dep, 8192, 4096).rows}
    assert "token_permute" not in gpu and "routed_swiglu" not in gpu
    assert "routed_swiglu" not in {r.name for r in decode_step(R1, h200, dep, 16, 2048).rows}
    # the shared expert is a plain GEMM (fit without the activation): its SwiGLU stays
    assert "shared_swiglu" in gpu
    # the 910C's grouped GEMM is the plain GEMM curve: the vector kernels are costed
    cm = {r.name for r in prefill_step(R1, CM, build_deployment(R1, dies=32, microbatches=1), 8192, 4096).rows}
    assert {"token_permute", "routed_swiglu"} <= cm


def test_blackwell_boards_apply_deepeps_sm_share():
    from cloudmatrix.perf.overlap import DEEPEP_NORMAL_SMS, comm_cores_for

    for name, sms in (("hgx-b200", 148), ("gb200-nvl72", 152)):
        share = comm_cores_for(load_system(name).chip).sm_share
        assert share == pytest.approx(DEEPEP_NORMAL_SMS / sms)


def test_attention_and_moe_tp_over_the_same_dies_share_one_all_reduce():
    from cloudmatrix.perf.kernels import collective

    h200 = load_system("hgx-h200")
    shared = build_deployment(R1, dies=8, ep=1, attn_tp=8, moe_tp=8, precision="fp8", microbatches=1)
    b = decode_step(R1, h200, shared, 0.5, 1024)
    moe_layer = {r.name for r in b.rows if r.group == "moe_layer"}
    # every layer ends in an all-reduce that leaves the group's tokens on every die: nothing is gathered
    assert {"attn_all_reduce", "moe_all_reduce"} <= moe_layer
    pairs = {"attn_tp_all_gather", "attn_tp_reduce_scatter", "moe_tp_all_gather", "moe_tp_reduce_scatter"}
    assert not moe_layer & pairs
    dense_layer = {r.name for r in b.rows if r.group == "dense_layer"}
    assert {"attn_all_reduce", "ffn_all_reduce"} <= dense_layer  # the dense FFN is TP over the group too
    # one all-reduce of the group's tensor costs one fixed latency less than the reduce-scatter + all-gather pair
    shard = 0.5 * R1.hidden * 2.0
    ar = collective("all_reduce", 8 * shard, 8, h200).time
    pair = collective("reduce_scatter", shard, 8, h200).time + collective("all_gather", shard, 8, h200).time
    # (NCCL: exactly one; where the stack's custom all-reduce kernel is faster, the all-reduce is cheaper still)
    assert pair - ar >= h200.spec.scale_up.collective_latency * (1 - 1e-6)
    for name in ("attn_all_reduce", "moe_all_reduce"):
        assert _row(b, name).time / _row(b, name).runs == pytest.approx(ar, rel=1e-6)
    # prefill MLA ends its SP -> TP -> SP on the die's own tokens: MoE TP still gathers and scatters
    p = {r.name for r in prefill_step(R1, h200, shared, 1024, 1024).rows}
    assert {"moe_tp_all_gather", "moe_tp_reduce_scatter"} <= p
    # TP attention over the EP group (attention TP 8, EP 8): no dispatch/combine either, one all-reduce
    ep_group = build_deployment(R1, dies=8, ep=8, attn_tp=8, precision="fp8", microbatches=1)
    e = decode_step(R1, h200, ep_group, 0.5, 1024)
    names = {r.name for r in e.rows if r.group == "moe_layer"}
    assert "moe_all_reduce" in names and not names & ({"dispatch", "combine"} | pairs)
    assert e.expert_load["mean_routed_rows_per_die"] == pytest.approx(4 * R1.top_k / 8)  # the group's 4 tokens
    # different groups (attention TP 4 on 8 dies, EP 8) keep the gathers, scatters and the all-to-all
    apart = build_deployment(R1, dies=8, ep=8, attn_tp=4, precision="fp8", microbatches=1)
    names = {r.name for r in decode_step(R1, h200, apart, 0.5, 1024).rows}
    assert {"attn_tp_all_gather", "attn_tp_reduce_scatter", "dispatch", "combine"} <= names
