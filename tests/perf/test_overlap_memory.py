"""Two microbatches share the die's HBM: overlapping memory-bound ops cannot beat the bus."""

from cloudmatrix.perf.op import OpCost
from cloudmatrix.perf.overlap import layer_time


def _memory_op(name: str, stream: str, memory_time: float) -> OpCost:
    return OpCost(name, stream, 1, 0.0, memory_time * 1e12, 0.0, memory_time, 0.0, memory_time)


def test_memory_bound_streams_are_paced_by_their_summed_bytes():
    # attention stream and MoE stream each stream 3 ms of weights: apart they would overlap to 3 ms a
    # pair, but one HBM carries both, so a pair takes 6 ms and a layer of two microbatches 12 ms
    ops = [_memory_op("attn_weights", "attn", 3e-3), _memory_op("expert_weights", "moe", 3e-3)]
    per_layer, _ = layer_time(ops, 2, "core-split", attn_share=2 / 3)
    assert abs(per_layer - 12e-3) < 1e-12
    # one microbatch: the same bytes once, serially
    assert abs(layer_time(ops, 1, "core-split", attn_share=2 / 3)[0] - 6e-3) < 1e-12


def test_compute_bound_streams_still_overlap():
    a = OpCost("attn_gemm", "attn", 1, 1e9, 0.0, 2e-3, 0.0, 0.0, 1e-3)
    b = OpCost("moe_gemm", "moe", 1, 1e9, 0.0, 1e-3, 0.0, 0.0, 5e-4)
    per_layer, fill = layer_time([a, b], 2, "core-split", attn_share=0.5)
    # each at half the cores: A = 4 ms, B = 2 ms; a pair lasts max(A, B), no memory floor binds
    assert abs(per_layer - 2 * 4e-3) < 1e-12 and abs(fill - 2e-3) < 1e-12


def test_decode_step_never_beats_its_physical_floor():
    """Found by the CLI fuzzer (seeds 5 and 11): `step --ep 32` printed a step under its roofline limit."""
    from cloudmatrix.perf.decode import decode_step
    from cloudmatrix.perf.deployment import build_deployment
    from cloudmatrix.specs.hardware import load_system
    from cloudmatrix.specs.model import load_model

    system, model = load_system("cloudmatrix384"), load_model("deepseek-r1")
    for ep in (32, 64, 320):
        dep = build_deployment(model, dies=ep, ep=ep, microbatches=2, system=system)
        step = decode_step(model, system, dep, batch_per_die=48, kv_len=4096)
        assert step.step_time >= step.limit_time, (ep, step.step_time, step.limit_time)
