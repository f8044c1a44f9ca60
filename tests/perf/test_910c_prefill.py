"""The 910C prefill MoE layer at the paper's operating point (paper-prefill-perfect: DeepSeek-R1 INT8, 32 dies,
EP32, 8,192 tokens per die, 4K prompts), op by op against quantities derived here from the model's dimensions:
the FLOPs of every GEMM and of causal attention, the transfer volumes the paper gives (INT8 dispatch 7.5 KB,
BF16 combine 14 KB per top-k copy), the precision each op runs in (INT8 GEMMs, BF16 attention core: paper's
INT8 scope), the vector work that must be costed (per-token quantisation of every INT8 GEMM input, SwiGLU,
RoPE and norms, token permutation, the combine's weighted sum) and what two microbatches can hide.
The audit that prints the same table with rates: benchmarks/ascend_910c_prefill_audit.py.
"""

import sys
from pathlib import Path

import pytest

from cloudmatrix.perf.context import DieContext
from cloudmatrix.perf.moe import moe_ops
from cloudmatrix.perf.overlap import comm_cores_for, layer_time
from cloudmatrix.perf.prefill import prefill_attention
from cloudmatrix.sim.costs import PoolCosts
from cloudmatrix.sim.scenario import load_scenario

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks" / "calibrate"))
import ascend_910c  # noqa: E402

PROMPT = 4096


@pytest.fixture(scope="module")
def setup():
    sc = load_scenario("paper-prefill-perfect")
    system, model = sc.check()
    dep = sc.deployment(sc.prefill, model)
    dep = dep.with_(imbalance=PoolCosts(model, system, dep, sc.experts).imbalance(sc.prefill.tokens_per_die))
    return system, model, dep, float(sc.prefill.tokens_per_die)


def layer(system, model, dep, tokens):
    c = DieContext(model, system, dep)
    return prefill_attention(c, tokens, PROMPT) + moe_ops(c, tokens, "prefill")[0]


def by_name(ops):
    return {op.name: op for op in ops}


def test_perfect_placement_has_no_imbalance(setup):
    _, _, dep, _ = setup
    assert dep.imbalance == pytest.approx(1.0)


def test_gemm_and_attention_flops_follow_the_model(setup):
    system, m, dep, t = setup
    ops = by_name(layer(system, m, dep.with_(microbatches=1), t))
    h, heads, qk, v = m.hidden, m.heads, m.qk_nope_head_dim + m.qk_rope_head_dim, m.v_head_dim
    expected = {
        "mla_down_proj": 2 * t * h * (m.q_lora_rank + m.kv_lora_rank + m.qk_rope_head_dim),
        "mla_up_proj": 2 * t * heads * (m.q_lora_rank * qk + m.kv_lora_rank * (m.qk_nope_head_dim + v)),
        # causal prefill of 4K prompts: query i attends to i + 1 keys, (L + 1) / 2 on average; QK^T and PV
        "attention_core": 2 * t * heads * (PROMPT + 1) / 2 * (qk + v),
        "o_proj": 2 * t * heads * v * h,
        "routed_experts": 2 * t * m.top_k * 3 * h * m.moe_intermediate,
        "shared_experts": 2 * t * m.shared_experts * 3 * h * m.moe_intermediate,
    }
    for name, flops in expected.items():
        assert ops[name].flops == pytest.approx(flops, rel=1e-9), name


def test_transfer_volumes_are_the_papers_per_copy_messages(setup):
    system, m, dep, t = setup
    ops = by_name(layer(system, m, dep.with_(microbatches=1), t))
    copies = t * m.top_k
    assert ops["dispatch"].bytes == pytest.approx(copies * 7.5 * 1024, rel=1e-9)  # 7,168 B INT8 + 512 B scale
    assert ops["combine"].bytes == pytest.approx(copies * 14 * 1024, rel=1e-9)  # 7,168 x BF16


def test_int8_gemms_run_above_the_bf16_peak_and_attention_below_it(setup):
    """INT8 scope (paper): the large FFN and attention matmuls run INT8; the attention core (QK^T, softmax, PV)
    stays BF16. Costed at the other precision the implied rate would cross the BF16 peak."""
    system, m, dep, t = setup
    ops = by_name(layer(system, m, dep.with_(microbatches=1), t))
    bf16 = system.chip.peak("bf16")
    for name in ("mla_down_proj", "o_proj", "routed_experts", "shared_experts"):
        assert ops[name].flops / ops[name].compute_time > bf16, name
    assert ops["attention_core"].flops / ops["attention_core"].compute_time < bf16


def test_vector_work_is_costed_with_its_hbm_traffic(setup):
    system, m, dep, t = setup
    ops = by_name(layer(system, m, dep.with_(microbatches=1), t))
    h, copies = m.hidden, t * m.top_k
    heads_out = t * m.heads * m.v_head_dim
    # per-token dynamic quantisation: read BF16, write INT8 (3 B per element) before every INT8 GEMM
    assert ops["down_proj_quant"].bytes == pytest.approx(t * h * 3, rel=1e-9)
    assert ops["o_proj_quant"].bytes == pytest.approx(heads_out * 3, rel=1e-9)
    assert ops["up_proj_quant"].bytes == pytest.approx(t * (m.q_lora_rank + m.kv_lora_rank) * 3, rel=1e-9)
    # the combine's weighted sum reads the top-k BF16 copies and writes the token (the shared expert's output,
    # which the sum also adds, is not read here: 8,192 x 7,168 x 2 B = 117 MB, ~0.09 ms per layer, not costed)
    assert ops["combine_sum"].bytes == pytest.approx(t * h * (m.top_k + 1) * 2, rel=1e-9)
    # the received INT8 copies gathered into expert-contiguous rows: read and write each 7.5 KB copy
    assert ops["token_permute"].bytes == pytest.approx(copies * 2 * 7.5 * 1024, rel=1e-9)
    for name in ("norms_residual", "rope_latent_norm", "routed_swiglu", "shared_swiglu", "dispatch_quant"):
        assert ops[name].flops == 0 and ops[name].bytes > 0 and ops[name].time > 0, name
        # element-wise kernels are HBM-bound: no faster than the die's HBM
        assert ops[name].bytes / ops[name].time <= system.chip.die.hbm_bandwidth, name


def test_two_microbatches_hide_at_most_the_transfers(setup):
    """The two-microbatch layer cannot be shorter than the one-microbatch layer less all its transfers (only
    transfers hide), nor longer than it; and on the 910C the transfers share the vector cores, so it is at least
    the compute of the two halves."""
    system, m, dep, t = setup
    full = layer(system, m, dep.with_(microbatches=1), t)
    one = layer_time(full, 1, "comm-compute", 1.0)[0]
    comm = sum(op.time for op in full if op.kind == "comm")
    half = layer(system, m, dep.with_(microbatches=2), t / 2)
    two = layer_time(half, 2, "comm-compute", 1.0, comm_cores_for(system.chip))[0]
    compute_halves = 2 * sum(op.time for op in half if op.kind != "comm")
    assert one - comm <= two < one
    assert two >= compute_halves


def test_prefill_attention_runs_at_the_a3_flashattention_fit(setup):
    """The prefill attention core is costed at the fused-FA figure measured on the A3 die (ascend_910c.fit_fa,
    written into the TOML): per-key rate and per-query-block cost, the latter as a fall-off with the keys each
    query sees, in BF16, not at the decode MLA kernel's 65.4%."""
    system, m, dep, t = setup
    eff = system.chip.efficiency
    fit = ascend_910c.fit_fa()
    assert eff.attention_prefill == pytest.approx(round(fit["attention_prefill"], 3), abs=1e-12)
    assert eff.attention_prefill_half_context == pytest.approx(round(fit["half_context"], 1), abs=1e-9)
    assert eff.attention_prefill_latency == pytest.approx(round(fit["latency"] * 1e6, 2) * 1e-6, rel=1e-9)
    assert eff.attention_prefill < eff.attention_compute
    core = by_name(layer(system, m, dep.with_(microbatches=1), t))["attention_core"]
    ctx = (PROMPT + 1) / 2
    rate = system.chip.peak("bf16") * eff.attention_prefill * ctx / (ctx + eff.attention_prefill_half_context)
    assert core.compute_time == pytest.approx(core.flops / rate, rel=1e-9)
    assert core.latency == pytest.approx(eff.attention_prefill_latency, rel=1e-12)
