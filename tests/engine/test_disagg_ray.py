"""The disaggregated deployment with its workers as Ray actors (one STRICT_PACK placement group on a local
Ray cluster; pool and weights as files in shared memory): the tokens of one process, and a killed decode
actor is replaced without losing a token."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

torch = pytest.importorskip("torch")
ray = pytest.importorskip("ray")
from safetensors.torch import save_file  # noqa: E402

from cloudmatrix.engine.disagg import DisaggConfig, DisaggregatedEngine  # noqa: E402
from cloudmatrix.engine.loader import load_model, random_state  # noqa: E402
from cloudmatrix.engine.model.config import ModelConfig  # noqa: E402
from cloudmatrix.engine.runtime.params import SamplingParams  # noqa: E402

from .tiny_configs import RAY_MODEL  # noqa: E402

REQUESTS = {"a": ([1, 2, 3, 4, 5], 12), "b": ([9, 8], 10)}


@torch.inference_mode()
def _one_process(model, prompt, n):
    cache = model.new_cache(num_blocks=16, block_size=4)
    sid = cache.add_sequence()
    h = model(torch.tensor(prompt), cache.plan([sid], [len(prompt)]), cache)
    toks = [int(model.logits(h[-1:]).argmax(-1))]
    while len(toks) < n:
        toks.append(int(model.logits(model(torch.tensor(toks[-1:]), cache.plan([sid], [1]), cache)).argmax(-1)))
    return toks


def test_disaggregated_workers_as_ray_actors(tmp_path):
    save_file(random_state(ModelConfig.from_dict(dict(RAY_MODEL)), seed=4), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(RAY_MODEL))
    ref = load_model(tmp_path)
    expected = {k: _one_process(ref, p, n) for k, (p, n) in REQUESTS.items()}
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False)
    engine = None
    try:
        engine = DisaggregatedEngine(tmp_path, config=DisaggConfig(
            decode_ep=2, block_size=4, pool_blocks=32, decode_cache_blocks=32, prefill_cache_blocks=16, ray="local"))
        assert os.getpid() not in engine.pids.values() and len(set(engine.pids.values())) == 3
        for k, (p, n) in REQUESTS.items():
            engine.add_request(k, p, SamplingParams(max_tokens=n))
        got = {k: [] for k in REQUESTS}
        killed, end = False, time.monotonic() + 90
        victim = engine.pids["decode0.0"]
        while engine.has_unfinished():
            assert time.monotonic() < end, "did not finish in time"
            for out in engine.step():
                got[out.request_id] += out.new_token_ids
            if not killed and all(len(v) >= 2 for v in got.values()):
                os.kill(victim, signal.SIGKILL)  # a decode actor's process dies
                killed = True
        assert got == expected
        assert killed and engine.health()["restarts"] == {"decode0": 1} and victim not in engine.pids.values()
    finally:
        if engine is not None:
            engine.close()
        ray.shutdown()
