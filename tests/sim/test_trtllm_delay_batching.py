"""TensorRT-LLM's delayed batching (batch_wait_timeout_iters, batch_wait_max_tokens_ratio) in a colocated
instance, and the InferenceMAX recipe that sets it."""

import numpy as np
import pytest

from cloudmatrix.sim.scenario import load_scenario
from cloudmatrix.sim.simulation import build_simulation
from cloudmatrix.validate.silicon_csv import PoolLayout, SiliconRow
from cloudmatrix.validate.silicon_recipes import serving_config

from .h200_colocated import h200_colocated

BASE = h200_colocated(
    instances=1, microbatches=1, shared_expert_dies=0, redundant_experts=0, backend="trtllm", chunked_prefill=False,
    overlap=False, tokens_per_die=1024, batch_per_die=8,
)
TRACE = """[workload]
kind = "trace"
trace = "t.csv"
"""


@pytest.fixture
def run(tmp_path):
    def go(trace: str, dies: int = 8, attn_tp: int = 8, **pool):
        keys = f"dies = {dies}\nep = {dies}\nattn_tp = {attn_tp}\n" + "".join(f"{k} = {v}\n" for k, v in pool.items())
        (tmp_path / "t.csv").write_text("arrival_time,input_len,output_len\n" + trace)
        (tmp_path / "s.toml").write_text(BASE + keys + TRACE)
        sim = build_simulation(load_scenario(tmp_path / "s.toml"))
        sim.run()
        return sim

    return go


def _held_steps(sim, r: int) -> int:
    """Steps that started while request r's prompt was queued (without overlap: the steps it was held)."""
    starts = np.asarray(sim.step_start["colocated"])
    return int(((starts > sim.queued[r]) & (starts < sim.prefill_start[r])).sum())


# one request decodes; a second arrives during its decode: its prompt is 900 tokens of an 8,192-token step
ONE_THEN_ONE = "0.0,1000,200\n0.05,900,20\n"


def test_a_prompt_beside_decoding_waits_the_timeout_in_steps(run):
    plain = run(ONE_THEN_ONE)
    wait = run(ONE_THEN_ONE, batch_wait_iters=5, batch_wait_ratio=0.8)
    assert _held_steps(plain, 1) == 0  # without waiting it joins the next step
    assert _held_steps(wait, 1) == 5  # 900 + 1 tokens < 0.8 x 8,192: held 5 steps, then it runs
    assert wait.first_token[1] - wait.arrival[1] > plain.first_token[1] - plain.arrival[1]
    assert wait.first_token[0] == plain.first_token[0]  # the first prompt had nothing decoding beside it


def test_enough_queued_tokens_release_the_prompts_at_once(run):
    # eight 900-token prompts reach 7,200 + 1 >= 0.8 x 8,192 tokens: the step that sees them all runs them
    trace = "0.0,1000,200\n" + "".join("0.05,900,20\n" for _ in range(8))
    low = run(trace, batch_wait_iters=5, batch_wait_ratio=0.8)
    assert max(_held_steps(low, r) for r in range(1, 9)) == 0
    high = run(trace, batch_wait_iters=5, batch_wait_ratio=0.95)  # 7,201 < 0.95 x 8,192: they wait
    assert min(_held_steps(high, r) for r in range(1, 9)) == 5


def test_attention_dp_never_waits(run):
    # PyExecutor._schedule skips _waiting_requests under attention DP: 8 ranks of attention TP1
    dp = run(ONE_THEN_ONE, attn_tp=1, batch_wait_iters=5, batch_wait_ratio=0.8)
    assert _held_steps(dp, 1) == 0


def _row(version: str, conc: int, isl: int = 1024, osl: int = 1024, dp: int = 1) -> SiliconRow:
    layout = PoolLayout(workers=1, batch=conc // dp, tp=8 // dp, pp=1, attention_dp=dp, moe_tp=8 // dp, moe_ep=dp)
    return SiliconRow(
        id="r", source="", backend="trtllm", backend_version=version, model="deepseek-ai/DeepSeek-R1",
        system="b200_sxm", precision="fp8", mode="agg", isl=isl, osl=osl, concurrency=conc, gemm_quant="fp8",
        moe_quant="fp8", agg=layout, prefill=None, decode=None, ttft_s=0.5, tpot_s=0.02,
    )  # fmt: skip


def test_the_b200_fp8_recipe_delays_batching_at_1k1k_from_64_clients_on_its_1_2_image():
    on = serving_config(_row("1.2.0rc6.post2", 64))
    assert (on.batch_wait_iters, on.batch_wait_ratio) == (40, 0.8)
    assert "wait up to 40 steps" in on.describe()
    for row in (_row("1.2.0rc6.post3", 32), _row("1.2.0rc6.post3", 64, osl=8192), _row("1.1.0rc2.post2", 64),
                _row("", 128)):  # fmt: skip
        assert serving_config(row).batch_wait_iters == 0, row
