"""A pool's `backend` key selects the serving stack's profile (kernel curves, schedule, hand-off): a shipped name
or a .toml path relative to the scenario; an unknown one is a one-line error."""

from importlib import resources
from pathlib import Path

import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf.context import DieContext
from cloudmatrix.sim.scenario import load_scenario
from cloudmatrix.sim.scheduling import scheduling_for
from cloudmatrix.sim.simulation import build_simulation
from cloudmatrix.specs.backend import DEFAULT_BACKEND, load_backend

COLOC = """
system = "hgx-h200"
model = "deepseek-r1"
mode = "colocated"
[precision]
weights = "fp8"
kv_cache = "fp8"
[colocated]
instances = 1
dies = 8
batch_per_die = 8
tokens_per_die = 1024
[workload]
kind = "closed"
concurrency = 8
num_requests = 16
input_len = 512
output_len = 16
"""


def test_pool_backend_reaches_the_deployment():
    sc = load_scenario("gb200-nvl72", {"decode.backend": "sglang"})
    system, model = sc.check()
    dec = sc.deployment(sc.decode, model)
    assert dec.backend == "sglang"
    assert sc.deployment(sc.prefill, model).backend is None  # per pool; absent: the default fit
    assert DieContext(model, system, dec).system is system.for_backend("sglang")


def test_unknown_pool_backend_is_one_line():
    with pytest.raises(CloudMatrixError) as e:
        load_scenario("gb200-nvl72", {"decode.backend": "sgl"})
    msg = str(e.value)
    assert "unknown backend 'sgl'" in msg and "sglang" in msg and "\n" not in msg


def test_a_profile_path_relative_to_the_scenario_sets_the_pools_schedule_and_kernels(tmp_path):
    shipped = load_backend("sglang")
    text = Path(str(resources.files("cloudmatrix.specs") / "catalog" / "backends" / "sglang.toml")).read_text()
    # the same stack, scheduled otherwise: prompts mixed into decode steps, no overlap, polled every 4 steps
    text = text.replace('prefill = "separate"', 'prefill = "mixed"').replace("overlap = true", "overlap = false")
    text = text.replace("recv_interval = 1", "recv_interval = 4")
    (tmp_path / "stacks").mkdir()
    (tmp_path / "stacks" / "mine.toml").write_text(text)
    (tmp_path / "s.toml").write_text(COLOC.replace("[colocated]\n", '[colocated]\nbackend = "stacks/mine.toml"\n'))
    sc = load_scenario(tmp_path / "s.toml")
    assert Path(sc.colocated.backend) == (tmp_path / "stacks" / "mine.toml").resolve()
    s = scheduling_for(sc.colocated)
    assert (s.prefill, s.overlap, s.recv_interval) == ("mixed", False, 4) != (
        shipped.scheduling.prefill, shipped.scheduling.overlap, shipped.scheduling.recv_interval)
    _, model = sc.check()
    assert sc.deployment(sc.colocated, model).backend == sc.colocated.backend
    assert load_backend(sc.colocated.backend).kernels == "sglang"


def test_a_missing_profile_path_is_one_line(tmp_path):
    with pytest.raises(CloudMatrixError) as e:
        load_scenario("gb200-nvl72", {"decode.backend": str(tmp_path / "none.toml")})
    assert "[decode] backend: backend profile file" in str(e.value) and "\n" not in str(e.value)


def test_every_shipped_profile_name_is_accepted_and_no_backend_is_the_default_profile(tmp_path):
    (tmp_path / "s.toml").write_text(COLOC)
    for name in ("engine", DEFAULT_BACKEND):
        assert load_scenario(tmp_path / "s.toml", {"colocated.backend": name}).colocated.backend == name
    plain = load_scenario(tmp_path / "s.toml").colocated
    assert plain.backend is None
    assert scheduling_for(plain) == load_backend(DEFAULT_BACKEND).scheduling
    sim = build_simulation(load_scenario("default"))
    assert sim.handoff == load_backend(DEFAULT_BACKEND).handoff
    # the decode pool's stack sets the hand-off (TensorRT-LLM's differs from the default's)
    trt = build_simulation(load_scenario("default", {"decode.backend": "trtllm"}))
    assert trt.handoff == load_backend("trtllm").handoff != sim.handoff
