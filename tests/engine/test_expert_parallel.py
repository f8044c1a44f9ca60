"""Expert parallelism over 2 and 4 spawned CPU ranks (gloo on 127.0.0.1) against the one-process reference.

Each spawn runs every scenario once (spawning costs seconds); the tests then check the results.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.distributed as dist  # noqa: E402

from cloudmatrix.engine.model.experts import ExpertWeights, LocalExperts  # noqa: E402
from cloudmatrix.engine.parallel import (  # noqa: E402
    ExpertParallelExperts,
    SlotMap,
    dispatch_row_bytes,
    use_expert_parallel,
)
from cloudmatrix.engine.quant import (  # noqa: E402
    Int8Experts,
    quantize_expert_weights,
    quantize_model,
    set_int8_matmul_mode,
)
from cloudmatrix.errors import CloudMatrixError  # noqa: E402

from .spawn_retry import run_ranks_once_more_on_signal  # noqa: E402
from .tiny_configs import TINY_MODEL  # noqa: E402

E, H, I, K = 8, 32, 16, 2
POPULARITY = [1, 5, 1, 1, 1, 9, 1, 1]  # experts 5 and 1 are hot and get the replicas
TOKENS = {2: [11, 0], 4: [7, 0, 19, 1]}  # uneven, and one rank with T = 0
SLOTS_PER_RANK = {2: 5, 4: 3}  # 2 redundant slots on 2 ranks, 4 on 4 ranks
# Only experts 0..3 are routed to in the "idle" case: ranks holding none of them receive nothing.
IDLE_MAP = {2: ((0, 1, 2, 3), (3, 4, 5, 6, 7)), 4: ((0, 1, 2), (2, 3), (4, 5), (6, 7))}


def _weights(dtype=torch.float32) -> ExpertWeights:
    g = torch.Generator().manual_seed(0)
    w = [torch.randn(E, I, H, generator=g) / H**0.5, torch.randn(E, I, H, generator=g) / H**0.5]
    w.append(torch.randn(E, H, I, generator=g) / I**0.5)
    return ExpertWeights(*(t.to(dtype) for t in w))


def _tokens(rank: int, n: int, seed: int, experts: list[int] | None = None, force: int | None = None):
    """hidden [n, H], distinct top-k ids drawn from `experts` (optionally always including `force`)."""
    g = torch.Generator().manual_seed(1000 * seed + rank)
    pool = list(range(E)) if experts is None else experts
    rows = []
    for _ in range(n):
        pick = [pool[i] for i in torch.randperm(len(pool), generator=g)[:K].tolist()]
        if force is not None and force not in pick:
            pick[0] = force
        rows.append(pick)
    ids = torch.tensor(rows, dtype=torch.long).reshape(n, K)
    return torch.randn(n, H, generator=g), ids, torch.rand(n, K, generator=g)


def _scenarios(rank: int, world: int) -> dict:
    """Every backend case on this rank: EP output, one-process reference output, and traffic figures."""
    res: dict = {}
    w = _weights()
    smap = SlotMap.build(E, world, SLOTS_PER_RANK[world], popularity=POPULARITY)
    n = TOKENS[world][rank]

    def case(name, backend, reference, h, ids, wt):
        res[name] = {
            "out": backend(h, ids, wt),
            "ref": reference(h, ids, wt),
            "stats": backend.stats,
            "slot_load": backend.slot_load.clone(),
            "experts": smap.experts_on(rank) if backend.placement is smap else None,
        }
        return res[name]["out"]

    ep = ExpertParallelExperts.from_full(w, smap)
    h, ids, wt = _tokens(rank, n, 1)
    first = case("fp32", ep, LocalExperts(w), h, ids, wt)
    res["fp32_repeat_equal"] = torch.equal(ep(h, ids, wt), first)

    ep_rep = ExpertParallelExperts.from_full(w, smap)
    case("replicas", ep_rep, LocalExperts(w), *_tokens(rank, n, 2, force=5))

    ep_q = ExpertParallelExperts.from_full(w, smap, dispatch_int8=True)
    case("int8_dispatch", ep_q, LocalExperts(w), *_tokens(rank, n, 3))

    set_int8_matmul_mode("int_mm")  # on any CPU, so the INT8 kernel itself is exercised across ranks
    wq = quantize_expert_weights(w)
    ep_w8a8 = ExpertParallelExperts.from_full(wq, smap, dispatch_int8=True)
    case("w8a8", ep_w8a8, Int8Experts(wq), *_tokens(rank, n, 4))
    res["w8a8_paths"] = dict(ep_w8a8.path_counts)

    wb = _weights(torch.bfloat16)
    ep_bf = ExpertParallelExperts.from_full(wb, smap, combine_dtype=torch.bfloat16)
    hb, ids_b, wt_b = _tokens(rank, n, 5)
    case("bf16", ep_bf, LocalExperts(wb), hb.bfloat16(), ids_b, wt_b)

    idle = SlotMap(E, IDLE_MAP[world])
    ep_idle = ExpertParallelExperts.from_full(w, idle)
    case("idle", ep_idle, LocalExperts(w), *_tokens(rank, n, 6, experts=[0, 1, 2, 3]))

    try:  # caught before any collective, so the other ranks are not left waiting
        ep(torch.randn(3, H + 1), torch.zeros(3, K, dtype=torch.long), torch.ones(3, K))
    except CloudMatrixError as e:
        res["bad_hidden_error"] = str(e)

    h0, ids0, wt0 = _tokens(rank, 0, 7)
    case("all_empty", ExpertParallelExperts.from_full(w, smap), LocalExperts(w), h0, ids0, wt0)
    return res


def _model_case(rank: int, world: int) -> dict:
    """A tiny DeepSeek-V3: prefill logits and greedy tokens with EP over the ranks vs one process."""
    from cloudmatrix.engine.generate import greedy_generate
    from cloudmatrix.engine.loader import random_model
    from cloudmatrix.engine.model.config import ModelConfig

    cfg = ModelConfig.from_dict(dict(TINY_MODEL))
    prompts = [[[3, 14, 15, 92, 65], [35, 89], [79, 32, 38, 46]], [[26, 43, 38, 32, 79, 50, 28]]][rank]
    ref_model = random_model(cfg, seed=3)
    ep_model = random_model(cfg, seed=3)
    smap = SlotMap.build(cfg.n_routed_experts, world, slots_per_rank=5)
    swapped = use_expert_parallel(ep_model, smap)

    def prefill_logits(model):
        cache = model.new_cache(num_blocks=16)
        seqs = [cache.add_sequence() for _ in prompts]
        batch = cache.plan(seqs, [len(p) for p in prompts])
        with torch.inference_mode():
            return model.logits(model(torch.tensor([t for p in prompts for t in p]), batch, cache))

    out = {
        "swapped": swapped,
        "ref_logits": prefill_logits(ref_model),
        "ep_logits": prefill_logits(ep_model),
        "ref_tokens": greedy_generate(ref_model, prompts, 4).tokens,
        "ep_tokens": greedy_generate(ep_model, prompts, 4).tokens,
    }
    # W8A8 after the EP swap: the EP backends quantise their own slots (quantize_int8).
    out["ep_int8_report"] = quantize_model(ep_model).experts
    quantize_model(ref_model)
    out["ref_int8_logits"] = prefill_logits(ref_model)
    out["ep_int8_logits"] = prefill_logits(ep_model)
    return out


def _two_rank_worker(rank: int, world: int) -> dict:
    out = _scenarios(rank, world)
    try:
        out["model"] = _model_case(rank, world)
    except ImportError as e:  # the model package is optional for this file's backend checks
        out["model"] = f"unavailable: {e}"
    return out


def _four_rank_worker(rank: int, world: int) -> dict:
    return _scenarios(rank, world)


@pytest.fixture(scope="module")
def two_ranks() -> list[dict]:
    return run_ranks_once_more_on_signal(_two_rank_worker, 2)


@pytest.fixture(scope="module")
def four_ranks() -> list[dict]:
    return run_ranks_once_more_on_signal(_four_rank_worker, 4)


@pytest.fixture(params=[2, 4], ids=["2ranks", "4ranks"])
def ranks(request, two_ranks, four_ranks) -> list[dict]:
    return two_ranks if request.param == 2 else four_ranks


def _close(a: torch.Tensor, b: torch.Tensor, rel: float) -> bool:
    if a.numel() == 0:
        return a.shape == b.shape
    return float((a.float() - b.float()).abs().max()) <= rel * float(b.float().abs().max())


def test_fp32_matches_one_process_exactly(ranks):
    for r in ranks:
        assert r["fp32"]["out"].shape == r["fp32"]["ref"].shape
        torch.testing.assert_close(r["fp32"]["out"], r["fp32"]["ref"], rtol=1e-5, atol=1e-6)
        assert r["fp32_repeat_equal"]  # deterministic: the same call gives the same bits


def test_rank_with_no_tokens_still_serves_others(ranks):
    idle_rank = ranks[1]["fp32"]
    assert idle_rank["out"].shape == (0, H) and idle_rank["stats"].tokens == 0
    assert idle_rank["stats"].rows_received > 0  # it computes for the other ranks' tokens


def test_redundant_replicas_all_receive_tokens(ranks):
    world = len(ranks)
    smap = SlotMap.build(E, world, SLOTS_PER_RANK[world], popularity=POPULARITY)
    assert int(smap.replica_count[5]) >= 2
    load_of_replica: dict[int, int] = {}
    for rank, r in enumerate(ranks):
        torch.testing.assert_close(r["replicas"]["out"], r["replicas"]["ref"], rtol=1e-5, atol=1e-6)
        for j, e in enumerate(r["replicas"]["experts"]):
            if e == 5:
                load_of_replica[rank] = int(r["replicas"]["slot_load"][j])
    assert len(load_of_replica) == int(smap.replica_count[5])
    assert all(v > 0 for v in load_of_replica.values()), load_of_replica
    assert sum(load_of_replica.values()) == sum(TOKENS[world])  # every token chose expert 5 once


def test_int8_dispatch_within_quantisation_error(ranks):
    for r in ranks:
        c = r["int8_dispatch"]
        assert _close(c["out"], c["ref"], 0.02)
        if c["out"].numel():
            assert not torch.equal(c["out"], c["ref"])  # the tokens really travelled as INT8


def test_int8_dispatch_bytes_per_row():
    fp32 = dispatch_row_bytes(7168, 8, torch.float32, int8=False)
    bf16 = dispatch_row_bytes(7168, 8, torch.bfloat16, int8=False)
    int8 = dispatch_row_bytes(7168, 8, torch.bfloat16, int8=True)
    assert (bf16["payload"], int8["payload"], int8["scale"]) == (14336, 7168, 4)
    assert fp32["payload"] == 28672 and int8["meta"] == 64


def test_traffic_counters_match_the_row_layout(ranks):
    for r in ranks:
        st_f, st_q = r["fp32"]["stats"], r["int8_dispatch"]["stats"]
        assert st_f.dispatch_bytes == st_f.dispatch_rows * dispatch_row_bytes(H, K, torch.float32, False)["total"]
        assert st_q.dispatch_bytes == st_q.dispatch_rows * dispatch_row_bytes(H, K, torch.float32, True)["total"]
        assert st_f.combine_bytes == st_f.dispatch_rows * H * 4
        assert st_f.dispatch_rows <= st_f.pairs  # one row per (token, rank), not per (token, expert)
    bf = ranks[0]["bf16"]["stats"]
    assert bf.combine_bytes == bf.dispatch_rows * H * 2
    total_sent = sum(r["fp32"]["stats"].dispatch_rows for r in ranks)
    assert total_sent == sum(r["fp32"]["stats"].rows_received for r in ranks)


def test_w8a8_experts_match_one_process_int8_backend(ranks):
    for r in ranks:
        torch.testing.assert_close(r["w8a8"]["out"], r["w8a8"]["ref"], rtol=1e-5, atol=1e-6)
    assert sum(r["w8a8_paths"].get("int_mm", 0) for r in ranks) > 0
    assert all(r["w8a8_paths"].get("float_fallback", 0) == 0 for r in ranks)


def test_bf16_with_bf16_combine(ranks):
    for r in ranks:
        assert r["bf16"]["out"].dtype == torch.bfloat16
        assert _close(r["bf16"]["out"], r["bf16"]["ref"], 0.02)


def test_ranks_that_receive_nothing(ranks):
    world = len(ranks)
    for rank, r in enumerate(ranks):
        torch.testing.assert_close(r["idle"]["out"], r["idle"]["ref"], rtol=1e-5, atol=1e-6)
        holds_routed = any(e < 4 for e in IDLE_MAP[world][rank])
        assert (r["idle"]["stats"].rows_received > 0) == holds_routed


def test_wrong_hidden_size_is_a_user_error(ranks):
    assert all("does not match the experts" in r.get("bad_hidden_error", "") for r in ranks)


def test_every_rank_empty(ranks):
    for r in ranks:
        assert r["all_empty"]["out"].shape == (0, H)
        assert r["all_empty"]["stats"].dispatch_bytes == 0


def test_tiny_model_logits_with_ep_match_one_process(two_ranks):
    for r in two_ranks:
        m = r["model"]
        if isinstance(m, str):
            pytest.skip(m)
        assert len(m["swapped"]) == 2  # the 2 MoE decoder layers
        torch.testing.assert_close(m["ep_logits"], m["ref_logits"], rtol=1e-4, atol=1e-5)
        assert m["ep_tokens"] == m["ref_tokens"]


def test_tiny_model_w8a8_with_ep_matches_one_process_w8a8(two_ranks):
    for r in two_ranks:
        m = r["model"]
        if isinstance(m, str):
            pytest.skip(m)
        assert m["ep_int8_report"] == m["swapped"]  # each EP backend quantised its own slots
        torch.testing.assert_close(m["ep_int8_logits"], m["ref_int8_logits"], rtol=1e-4, atol=1e-5)
        assert not torch.allclose(m["ep_int8_logits"], m["ep_logits"], rtol=1e-4, atol=1e-5)  # really INT8


def test_slot_map_routing_is_deterministic_and_spreads_replicas():
    smap = SlotMap.build(E, 4, 3, popularity=POPULARITY)
    assert smap.num_slots == 12 and sorted(smap.slot_expert.tolist()) == sorted(
        e for r in range(4) for e in smap.experts_on(r)
    )
    ids = torch.full((8, 1), 5)
    slots = smap.route(ids, rank=0)
    assert torch.equal(slots, smap.route(ids, rank=0))
    assert set(slots.reshape(-1).tolist()) == set(smap.replicas_of(5))
    assert not torch.equal(smap.route(ids, rank=1), slots)  # ranks start at different replicas
    assert torch.equal(smap.slot_expert[slots], ids)


def test_slot_map_from_control_plane_placement():
    from cloudmatrix.serving.eplb import ExpertPlacement

    cp = ExpertPlacement.build(torch.tensor(POPULARITY, dtype=torch.float64).numpy(), 4, 3, mode="eplb")
    smap = SlotMap.from_eplb(cp)
    assert smap.num_ranks == 4 and smap.num_slots == 12
    assert smap.replica_count.tolist() == cp.replicas.tolist()


def test_slot_map_errors_say_what_to_fix():
    with pytest.raises(CloudMatrixError, match="no slot"):
        SlotMap(4, ((0, 1), (2,)))
    with pytest.raises(CloudMatrixError, match="outside"):
        SlotMap(2, ((0, 1), (2,)))
    with pytest.raises(CloudMatrixError, match="logical expert ids"):
        SlotMap.build(E, 2).route(torch.tensor([[0, 8]]))
    with pytest.raises(CloudMatrixError, match="popularity"):
        SlotMap.build(E, 2, popularity=[1.0, 2.0])


def test_backend_needs_an_initialised_process_group():
    if dist.is_initialized():
        pytest.skip("a process group is already up in this process")
    with pytest.raises(CloudMatrixError, match="init_process_group"):
        ExpertParallelExperts(_weights(), SlotMap.build(E, 1))


def test_use_expert_parallel_needs_moe_layers():
    with pytest.raises(CloudMatrixError, match="no MoE layer"):
        use_expert_parallel(torch.nn.Linear(2, 2), SlotMap.build(E, 1))
