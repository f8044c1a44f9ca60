"""Serving-stack profiles (specs/backend.py) and host dispatch in the step model (perf/host.py, perf/step.py):
an eager step is paced by the larger of device and host time, a graphed one pays one launch, a CPU engine adds."""

from pathlib import Path

import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.perf import decode_step, prefill_step
from cloudmatrix.perf.deployment import build_deployment
from cloudmatrix.specs.backend import DEFAULT_BACKEND, backend_names, kernel_curves, load_backend
from cloudmatrix.specs.hardware import BACKENDS, load_system
from cloudmatrix.specs.model import load_model

R1 = load_model("deepseek-r1")
B200 = load_system("hgx-b200")


SCHEDULE = (
    '[scheduling]\nprefill = "mixed"\nchunked = true\noverlap = false\nrecv_interval = 1\nbalance_timeout = 0\n'
    '[handoff]\nrouting = "least_loaded"\nfirst_token_after_step = false\n'
    "pull_after_admission = false\n"
)


def _profile(tmp_path: Path, name: str, per_op: str, moe: float, dense: float, decode: str = "graph",
             overlap: str = "async") -> str:  # fmt: skip
    ops = f"moe_layer = {moe}\ndense_layer = {dense}\nmtp_layer = {moe}\nhead = 5\n"
    text = (
        f'name = "{name}"\ndescription = "test"\nkernels = "sglang"\noverlap = "{overlap}"\n'
        f'[phases]\ndecode = "{decode}"\nprefill = "eager"\n'
        f'[host]\nper_op = "{per_op}"\ngraph_launch = "4 us"\n'
        f"[ops.prefill]\n{ops}[ops.decode]\n{ops}{SCHEDULE}"
    )
    p = tmp_path / f"{name}.toml"
    p.write_text(text)
    return str(p)


def _dep(backend):
    return build_deployment(R1, dies=8, attn_tp=8, moe_tp=8, ep=1, precision="fp8", backend=backend, system=B200)


def test_every_shipped_profile_loads_and_names_its_kernel_curves():
    names = backend_names()
    assert {"trtllm", "sglang", "vllm", "engine", DEFAULT_BACKEND} <= set(names)
    for n in names:
        p = load_backend(n)
        assert p.name == n
        assert p.kernels is None or p.kernels in BACKENDS
        for phase in ("prefill", "decode"):
            if getattr(p.phases, phase) == "eager":
                assert p.ops[phase].moe_layer > 0
    assert load_backend(None).name == DEFAULT_BACKEND
    assert kernel_curves("engine") is None and kernel_curves("sglang") == "sglang" and kernel_curves(None) is None


def test_an_unknown_backend_is_a_one_line_error_naming_the_profiles():
    with pytest.raises(CloudMatrixError, match="unknown backend 'tensorrt'.*sglang"):
        _dep("tensorrt")


def test_an_eager_phase_without_op_counts_is_refused(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('name = "bad"\ndescription = "x"\n[phases]\ndecode = "graph"\nprefill = "eager"\n'
                 '[host]\nper_op = "5 us"\n' + SCHEDULE)  # fmt: skip
    with pytest.raises(CloudMatrixError, match=r"prefill is eager but \[ops.prefill\] is missing"):
        load_backend(str(p))


def test_a_prefill_with_tiny_device_work_is_host_bound_and_scales_with_ops_times_layers(tmp_path):
    slow = _profile(tmp_path, "slow", "1 ms", moe=30, dense=20)
    slower = _profile(tmp_path, "slower", "1 ms", moe=60, dense=40)
    a = prefill_step(R1, B200, _dep(slow), 16, 16, check_memory=False)
    b = prefill_step(R1, B200, _dep(slower), 16, 16, check_memory=False)
    dense_layers = R1.layers - R1.moe_layers
    host_a = 1e-3 * (30 * R1.moe_layers + 20 * dense_layers + 5)
    assert a.host_time == pytest.approx(host_a)
    # the host paces every layer: the step is the host's time (the device's is far below 1 ms per op)
    assert a.step_time == pytest.approx(host_a, rel=1e-6)
    assert b.step_time == pytest.approx(1e-3 * (60 * R1.moe_layers + 40 * dense_layers + 5), rel=1e-6)


def test_a_device_bound_prefill_hides_the_host(tmp_path):
    none = _profile(tmp_path, "free", "0 us", moe=30, dense=20)
    some = _profile(tmp_path, "some", "1 us", moe=30, dense=20)
    a = prefill_step(R1, B200, _dep(none), 8192, 8192, check_memory=False)
    b = prefill_step(R1, B200, _dep(some), 8192, 8192, check_memory=False)
    assert b.host_time > 0
    assert b.step_time == a.step_time


def test_a_graphed_decode_step_pays_one_launch_whatever_the_ops(tmp_path):
    few = _profile(tmp_path, "few", "1 ms", moe=1, dense=1)
    many = _profile(tmp_path, "many", "1 ms", moe=1000, dense=1000)
    a = decode_step(R1, B200, _dep(few), 4, 2048, check_memory=False)
    b = decode_step(R1, B200, _dep(many), 4, 2048, check_memory=False)
    assert a.step_time == b.step_time
    assert a.host_time == pytest.approx(4e-6)
    eager = _profile(tmp_path, "eager", "1 ms", moe=1000, dense=1000, decode="eager")
    c = decode_step(R1, B200, _dep(eager), 4, 2048, check_memory=False)
    assert c.step_time > 1000 * 1e-3 * R1.layers  # an eager decode with these ops is host-bound


def test_a_serial_host_adds_to_the_device_time(tmp_path):
    free = _profile(tmp_path, "zero", "0 us", moe=30, dense=20, overlap="serial")
    cpu = _profile(tmp_path, "cpu", "10 us", moe=30, dense=20, overlap="serial")
    a = prefill_step(R1, B200, _dep(free), 8192, 8192, check_memory=False)
    b = prefill_step(R1, B200, _dep(cpu), 8192, 8192, check_memory=False)
    assert b.step_time == pytest.approx(a.step_time + b.host_time)


def test_each_microbatch_issues_every_layers_ops_but_a_merged_head_issues_once(tmp_path):
    eager = _profile(tmp_path, "eager2", "10 us", moe=100, dense=50, decode="eager")
    one = decode_step(R1, B200, _dep(eager), 8, 2048, check_memory=False)
    two = decode_step(R1, B200, _dep(eager).with_(microbatches=2), 8, 2048, check_memory=False)
    layers = 10e-6 * (100 * R1.moe_layers + 50 * (R1.layers - R1.moe_layers))
    head = 10e-6 * 5
    assert one.host_time == pytest.approx(layers + head)
    assert two.host_time == pytest.approx(2 * layers + head)


@pytest.mark.parametrize(("section", "key", "bad", "why"), [
    ("scheduling", "prefill", '"interleaved"', "'mixed' or 'separate'"),
    ("scheduling", "chunked", '"yes"', "valid boolean"),
    ("scheduling", "recv_interval", "0", "greater than or equal to 1"),
    ("handoff", "routing", '"random"', "'least_loaded' or 'round_robin'"),
])  # fmt: skip
def test_a_bad_schedule_or_hand_off_value_is_one_line_naming_the_file_and_key(tmp_path, section, key, bad, why):
    good = Path(_profile(tmp_path, "stack", "5 us", moe=1, dense=1)).read_text()
    lines = good.splitlines()
    at = lines.index(f"[{section}]")
    i = next(j for j in range(at, len(lines)) if lines[j].startswith(f"{key} = "))
    lines[i] = f"{key} = {bad}"
    p = tmp_path / "bad.toml"
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(CloudMatrixError) as e:
        load_backend(str(p))
    msg = str(e.value)
    assert msg.startswith(f"{p}: {section}.{key}: ") and why in msg and "\n" not in msg


def test_a_profile_without_its_schedule_is_refused(tmp_path):
    text = Path(_profile(tmp_path, "stack", "5 us", moe=1, dense=1)).read_text()
    p = tmp_path / "noschedule.toml"
    p.write_text(text[: text.index("[scheduling]")])
    with pytest.raises(CloudMatrixError, match=r"noschedule.toml: scheduling: Field required"):
        load_backend(str(p))


def test_hand_off_routing_names_are_the_routers():
    from typing import get_args

    from cloudmatrix.serving.router import DECODE_ROUTING
    from cloudmatrix.specs.backend import HandOff

    assert set(get_args(HandOff.model_fields["routing"].annotation)) == set(DECODE_ROUTING)
