"""The 910C at the layer level (Zuo et al., arXiv 2506.12708, ablation section, read via a public reading note):

- calibration: one decode layer takes 874 us without MTP and 1,260 us with one MTP token (EP320, 48 seqs/die,
  KV 4K, INT8); benchmarks/calibrate/ascend_910c.py fits kernel_latency to them through the real step model;
- validation of the microbatch mechanisms (perf/overlap.py), bands not figures: decode per-layer latency ~10%
  lower with two microbatches (Figure 14), throughput +5.8% / +9.4% / +6.9% at 64 / 96 / 128 seqs per NPU;
  prefill per-layer latency ~24% lower, throughput +23-31%.
"""

import sys
from dataclasses import replace
from pathlib import Path

import pytest

from cloudmatrix.perf import kernels
from cloudmatrix.perf.decode import decode_step
from cloudmatrix.perf.op import OpCost, comm_op
from cloudmatrix.perf.overlap import CommCores, layer_time
from cloudmatrix.perf.prefill import prefill_step
from cloudmatrix.sim.costs import PoolCosts
from cloudmatrix.sim.scenario import load_scenario
from cloudmatrix.specs.hardware import load_chip, load_system

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks" / "calibrate"))
import ascend_910c  # noqa: E402  (imports scipy only inside its fits)

CM = load_system("cloudmatrix384")
# the fit's largest residual is 1.6% (printed by `python benchmarks/calibrate/ascend_910c.py`, in the TOML comment)
FIT_RESIDUAL = 0.02


def decode_throughput(mb: int, batch: float, mtp: int = 1) -> float:
    sc = load_scenario(ascend_910c.LAYER_SCENARIO)
    _, model = sc.check()
    dep = sc.deployment(sc.decode.model_copy(update={"microbatches": mb}), model)
    dep = dep.with_(mtp_depth=mtp, mtp_acceptance=0.7 if mtp else 0.0)
    dep = dep.with_(imbalance=PoolCosts(model, CM, dep, sc.experts).imbalance(batch * (1 + mtp)))
    return decode_step(model, CM, dep, batch, 4096, check_memory=False).tokens_per_s_per_chip


def prefill_layer(mb: int) -> tuple[float, float]:
    """(MoE layer time, tokens/s per chip) on the paper's prefill instance (EP32, 8,192 tokens/die, 4K prompts):
    the step with one more layer minus the step, as ascend_910c.decode_layer_time does for decode."""
    sc = load_scenario("paper-prefill")
    system, model = sc.check()
    dep = sc.deployment(sc.prefill.model_copy(update={"microbatches": mb}), model)
    dep = dep.with_(imbalance=PoolCosts(model, system, dep, sc.experts).imbalance(sc.prefill.tokens_per_die))

    def step(m):
        return prefill_step(m, system, dep, sc.prefill.tokens_per_die, 4096, check_memory=False)

    one_more = replace(model, layers=model.layers + 1)
    return step(one_more).step_time - step(model).step_time, step(model).tokens_per_s_per_chip


# ---------------------------------------------------------------- calibration


@pytest.mark.parametrize("mtp", sorted(ascend_910c.LAYER_FIGURES))
def test_the_calibrated_decode_layer_matches_the_papers_layer_time(mtp):
    t = ascend_910c.decode_layer_time(CM, mtp, microbatches=2)
    assert t == pytest.approx(ascend_910c.LAYER_FIGURES[mtp], rel=FIT_RESIDUAL)


def test_the_latency_fit_recovers_a_latency_it_was_given():
    pytest.importorskip("scipy", reason="the calibrate extra (scipy) is not installed")
    true = 7e-6
    s = ascend_910c.chip_with({"kernel_latency": true, "attention_decode_serial": True})
    figures = {m: ascend_910c.decode_layer_time(s, m) for m in (0, 1)}
    fit = ascend_910c.fit_kernel_latency(figures=figures)
    assert fit["kernel_latency"] == pytest.approx(true, rel=1e-3)
    assert max(abs(r) for r in fit["residual"].values()) < 1e-3


def test_the_910c_decode_attention_adds_its_kv_loads_to_its_compute():
    chip = load_chip("ascend-910c")
    assert chip.efficiency.attention_decode_serial
    args = (48.0, 48.0, 4096.0, 128.0, 512.0, 64.0, "bf16", "bf16")
    op = kernels.mla_decode(*args, chip)
    assert op.time == pytest.approx(chip.efficiency.attention_latency + op.compute_time + op.memory_time)
    # on a share of the cores only the compute slows (the loads keep the die's HBM rate)
    assert op.time_with_share(2 / 3) == pytest.approx(op.time + op.compute_time / 2)
    h800 = load_chip("h800-sxm")
    other = kernels.mla_decode(*args, h800)
    assert other.time == pytest.approx(other.latency + max(other.compute_time, other.memory_time))


# ---------------------------------------------------------------- microbatching, validation bands


@pytest.mark.parametrize("batch", [32, 48, 64])
def test_decode_microbatching_lowers_the_layer_time(batch):
    one = ascend_910c.decode_layer_time(CM, 1, microbatches=1, batch=batch)
    two = ascend_910c.decode_layer_time(CM, 1, microbatches=2, batch=batch)
    assert 0.03 <= 1 - two / one <= 0.15, (batch, one, two)  # paper: ~10% at 48 per die


@pytest.mark.parametrize("batch", [32, 48, 64])
def test_decode_microbatching_gains_throughput(batch):
    gain = decode_throughput(2, batch) / decode_throughput(1, batch) - 1
    assert 0.02 <= gain <= 0.15, (batch, gain)  # paper: +5.8% / +9.4% / +6.9% at 32 / 48 / 64 per die


def test_prefill_microbatching_gains_in_the_measured_size_class():
    one, _ = prefill_layer(1)
    two, _ = prefill_layer(2)
    assert 0.15 <= 1 - two / one <= 0.35, (one, two)  # paper: ~24% per layer


def _compute(name: str, t: float, vector: bool = False) -> OpCost:
    # a vector kernel has no matmul FLOPs (it needs the 910C's vector cores); a cube kernel has some
    return OpCost(name, "attn", 1, 0.0 if vector else 1.0, 0.0, t, 0.0, 0.0, t)


def test_a_transfer_hides_only_behind_the_compute_it_runs_beside():
    # attention 1 ms, dispatch 2 ms, experts 3 ms, combine 0.5 ms. Summed over the layer the 2.5 ms of transfers
    # fit behind 4 ms of compute, but the dispatch of one microbatch runs beside the other's 1 ms attention
    # (window 2 ms) and the other's dispatch beside the first's experts (3 ms); combines beside 3 ms and 1 ms.
    ops = [_compute("attn", 1e-3), comm_op("dispatch", "moe", 1, 0, 2e-3, 0), _compute("experts", 3e-3)]
    ops.append(comm_op("combine", "moe", 1, 0, 0.5e-3, 0))
    layer, _ = layer_time(ops, 2, "comm-compute", 1.0, CommCores())
    assert layer == pytest.approx((2e-3 + 3e-3) + (3e-3 + 1e-3))
    assert layer > 2 * 4e-3  # the layer-wide sum would hide every transfer
    # on the 910C the window's vector kernels share the vector cores with the transfer
    ops[0] = _compute("attn", 1e-3, vector=True)
    layer_v, _ = layer_time(ops, 2, "comm-compute", 1.0, CommCores(vector_cores=True))
    assert layer_v == pytest.approx((1e-3 + 2e-3) + 3e-3 + 3e-3 + (1e-3 + 0.5e-3))


def test_a_dense_layer_runs_its_ffn_on_the_ffn_stream():
    # paper §4.2.3: the second decode stream runs the layer's MLP; on the attention stream the FFN stream would
    # idle through the dense layers and the attention stream would run both on two thirds of the cores
    from cloudmatrix.perf.context import DieContext
    from cloudmatrix.perf.dense import dense_ffn_ops

    sc = load_scenario("paper-decode")
    _, model = sc.check()
    dep = sc.deployment(sc.decode.model_copy(update={"microbatches": 2}), model)
    c = DieContext(model, CM, dep, {"attn": 2 / 3, "moe": 1 / 3})
    assert {op.stream for op in dense_ffn_ops(c, 24.0)} == {"moe"}


def test_the_lm_head_runs_once_on_the_merged_microbatches():
    # two microbatches merge again before the head (SGLang two_batch_overlap: split, layers, merge, head): its
    # weights are read once per step, on the whole die, as with one microbatch
    sc = load_scenario("paper-decode")
    _, model = sc.check()
    rows = {}
    for mb in (1, 2):
        dep = sc.deployment(sc.decode.model_copy(update={"microbatches": mb}), model)
        b = decode_step(model, CM, dep, 48, 4096, check_memory=False)
        rows[mb] = {r.name: r for r in b.rows if r.group == "head"}
    assert set(rows[2]) == {"lm_head", "mtp_head"}
    for name, r in rows[2].items():
        assert (
            r.runs == 1
            and r.time == pytest.approx(rows[1][name].time)
            and r.bytes == pytest.approx(rows[1][name].bytes)
        )
