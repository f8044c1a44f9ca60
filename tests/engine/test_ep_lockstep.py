"""EP groups in lockstep over 2 and 3 spawned CPU ranks: sequences ending at different steps, a rank with no
requests, per-rank expert loading from the safetensors files, and microbatched decode — all give the tokens
of one process."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import save_file  # noqa: E402

from cloudmatrix.engine.loader import load_model, random_state  # noqa: E402
from cloudmatrix.engine.model.config import ModelConfig  # noqa: E402
from cloudmatrix.engine.parallel import SlotMap, StepSync  # noqa: E402
from cloudmatrix.engine.parallel.ep_generate import lockstep_generate  # noqa: E402
from cloudmatrix.errors import CloudMatrixError  # noqa: E402

from .spawn_retry import run_ranks_once_more_on_signal  # noqa: E402
from .tiny_configs import TINY_MODEL  # noqa: E402

SLOTS_PER_RANK = {2: 5, 3: 3}
# Per world size, per rank: (prompt, max_new_tokens) pairs. Rank 1 of 3 has no requests at all.
REQUESTS = {
    2: [[([3, 14, 15, 92, 65], 2), ([35, 89], 7), ([79, 32, 38, 46], 4)], [([26, 43, 38, 32, 79, 50, 28], 5)]],
    3: [[([3, 14, 15, 92, 65], 3), ([35, 89], 8)], [], [([26, 43, 38], 1), ([2, 71, 82, 81, 82, 84, 59], 6)]],
}


def _write_checkpoint(folder) -> None:
    """Layer 1's experts one tensor per expert (DeepSeek's layout), layer 2's fused (transformers' layout)."""
    cfg = ModelConfig.from_dict(dict(TINY_MODEL))
    tensors = random_state(cfg, seed=3)
    prefix = "model.layers.1.mlp.experts"
    gate, up = tensors.pop(f"{prefix}.gate_up_proj").chunk(2, dim=1)
    down = tensors.pop(f"{prefix}.down_proj")
    for e in range(cfg.n_routed_experts):
        tensors[f"{prefix}.{e}.gate_proj.weight"] = gate[e].clone()
        tensors[f"{prefix}.{e}.up_proj.weight"] = up[e].clone()
        tensors[f"{prefix}.{e}.down_proj.weight"] = down[e].clone()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(TINY_MODEL))


def _worker(rank: int, world: int, folder: str) -> dict:
    smap = SlotMap.build(TINY_MODEL["n_routed_experts"], world, SLOTS_PER_RANK[world])
    model = load_model(folder, placement=smap)  # reads only this rank's experts
    sync = StepSync(model)
    reqs = REQUESTS[world][rank]
    prompts, maxes = [p for p, _ in reqs], [m for _, m in reqs]
    plain = lockstep_generate(model, sync, prompts, maxes, block_size=4)
    micro = lockstep_generate(model, StepSync(model), prompts, maxes, block_size=4, microbatch=True)
    out = {
        "slots": smap.experts_on(rank),
        "down_l1": model.layers[1].mlp.experts.down.clone(),
        "gate_up_l2": model.layers[2].mlp.experts.gate.clone(),
        "plain": plain,
        "micro": micro,
    }
    # Ranks that run different MoE layers at the same collective fail loudly, on every rank.
    empty = torch.empty(0, TINY_MODEL["hidden_size"])
    try:
        model.layers[1 + rank % 2].mlp(empty)
    except CloudMatrixError as e:
        out["mismatch_error"] = str(e)
    return out


@torch.inference_mode()
def _one_process_greedy(model, prompt: list[int], n: int) -> list[int]:
    cache = model.new_cache(num_blocks=16, block_size=4)
    sid = cache.add_sequence()
    h = model(torch.tensor(prompt), cache.plan([sid], [len(prompt)]), cache)
    toks = [int(model.logits(h[-1:]).argmax(-1))]
    while len(toks) < n:
        h = model(torch.tensor(toks[-1:]), cache.plan([sid], [1]), cache)
        toks.append(int(model.logits(h).argmax(-1)))
    return toks


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ep-ckpt")
    _write_checkpoint(folder)
    return folder


@pytest.fixture(scope="module", params=[2, 3], ids=["2ranks", "3ranks"])
def group_run(request, checkpoint):
    world = request.param
    return world, run_ranks_once_more_on_signal(_worker, world, str(checkpoint), timeout_s=60)


def test_lockstep_tokens_match_one_process(group_run, checkpoint):
    world, results = group_run
    ref_model = load_model(checkpoint)
    for rank, r in enumerate(results):
        expected = [_one_process_greedy(ref_model, p, m) for p, m in REQUESTS[world][rank]]
        assert r["plain"].tokens == expected
        assert [len(t) for t in expected] == [m for _, m in REQUESTS[world][rank]]  # ended at different steps


def test_microbatched_decode_gives_the_same_tokens(group_run):
    _, results = group_run
    for r in results:
        assert r["micro"].tokens == r["plain"].tokens


def test_ranks_without_work_run_empty_steps(group_run):
    world, results = group_run
    steps = {r["plain"].steps for r in results}
    assert len(steps) == 1  # the whole group took the same number of steps
    longest = max(m for reqs in REQUESTS[world] for _, m in reqs)
    assert steps == {longest + 1}  # prefill + decodes of the longest request, then the agreeing "done" step
    for rank, r in enumerate(results):
        own = max((m for _, m in REQUESTS[world][rank]), default=0)
        assert r["plain"].real_passes == own  # prefill, then one pass per further token
        assert r["plain"].idle_passes == longest - own  # ... and empty passes for the others' tokens


def test_each_rank_loaded_only_its_experts(group_run, checkpoint):
    _, results = group_run
    full = load_model(checkpoint)
    for r in results:
        idx = torch.tensor(r["slots"])
        assert r["down_l1"].shape[0] == len(r["slots"]) < TINY_MODEL["n_routed_experts"]
        torch.testing.assert_close(r["down_l1"], full.layers[1].mlp.experts.weights.down[idx], rtol=0, atol=0)
        torch.testing.assert_close(r["gate_up_l2"], full.layers[2].mlp.experts.weights.gate[idx], rtol=0, atol=0)


def test_out_of_step_ranks_fail_loudly(group_run):
    world, results = group_run
    for r in results:
        assert "out of step" in r["mismatch_error"]
