"""Block-FP8 DeepSeek checkpoints are dequantised on load; strict tensor sets; .to()/state_dict() reach
every experts backend (local, INT8, expert-parallel)."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
import torch.distributed as dist  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from cloudmatrix.engine.loader import load_model, random_model  # noqa: E402
from cloudmatrix.engine.model.config import ModelConfig  # noqa: E402
from cloudmatrix.engine.parallel import SlotMap, use_expert_parallel  # noqa: E402
from cloudmatrix.engine.quant import quantize_model  # noqa: E402
from cloudmatrix.engine.quant.fp8 import quantize_block_fp8  # noqa: E402
from cloudmatrix.errors import CloudMatrixError  # noqa: E402

BLOCK = [32, 32]  # smaller than DeepSeek's 128 so the tiny matrices have several blocks, some partial


def _fp8_candidate(name: str) -> bool:
    """What DeepSeek-V3 stores in FP8: linear weights, except embeddings, the LM head and the router."""
    return name.endswith("proj.weight") or name.endswith("proj_with_mqa.weight")


def _write_fp8(src, dst) -> list[str]:
    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    quantized = []
    for name in [n for n in tensors if _fp8_candidate(n)]:
        q, s = quantize_block_fp8(tensors[name], tuple(BLOCK))
        tensors[name], tensors[name + "_scale_inv"] = q, s
        quantized.append(name)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((dst / "config.json").read_text())
    cfg["quantization_config"] = {
        "quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": BLOCK,
    }  # fmt: skip
    (dst / "config.json").write_text(json.dumps(cfg))
    return quantized


def _loop_dequant(q: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Reference: block by block, the way DeepSeek's weight_dequant reads it."""
    w = q.float().clone()
    bn, bk = BLOCK
    for i in range(s.shape[0]):
        for j in range(s.shape[1]):
            w[i * bn : (i + 1) * bn, j * bk : (j + 1) * bk] *= s[i, j]
    return w


@pytest.fixture(scope="module")
def fp8_dir(hf_dir, tmp_path_factory):
    dst = tmp_path_factory.mktemp("fp8") / "ck"
    _write_fp8(hf_dir, dst)
    return dst


def _prefill_logits(model, prompts):
    cache = model.new_cache(num_blocks=32, block_size=4)
    seqs = [cache.add_sequence() for _ in prompts]
    batch = cache.plan(seqs, [len(p) for p in prompts])
    with torch.inference_mode():
        return model.logits(model(torch.tensor([t for p in prompts for t in p]), batch, cache))


def test_config_keeps_quantization_config(fp8_dir):
    cfg = ModelConfig.from_json(fp8_dir)
    assert cfg.fp8_block_size == (32, 32)
    assert cfg.quantization_config["quant_method"] == "fp8"


def test_fp8_weights_are_dequantised_blockwise(fp8_dir):
    model = load_model(fp8_dir)
    raw = load_file(fp8_dir / "model.safetensors")
    name = "model.layers.1.self_attn.kv_b_proj.weight"  # [112, 32]: the last row block is partial
    assert raw[name].dtype == torch.float8_e4m3fn and raw[name + "_scale_inv"].shape == (4, 1)
    torch.testing.assert_close(
        model.layers[1].self_attn.kv_b_proj.weight, _loop_dequant(raw[name], raw[name + "_scale_inv"]), rtol=0, atol=0
    )
    e = "model.layers.2.mlp.experts.5.down_proj.weight"  # [64, 32] routed expert
    ref = _loop_dequant(raw[e], raw[e + "_scale_inv"])
    torch.testing.assert_close(model.layers[2].mlp.experts.weights.down[5], ref, rtol=0, atol=0)


def test_fp8_model_matches_its_dequantised_reference(fp8_dir, hf_dir, tmp_path, prompts):
    """Logits equal those of a float checkpoint holding the block-by-block dequantised weights, and every
    dequantised weight is within e4m3 rounding of the original float one."""
    raw = load_file(fp8_dir / "model.safetensors")
    orig = load_file(hf_dir / "model.safetensors")
    ref_dir = tmp_path / "ref"
    shutil.copytree(hf_dir, ref_dir)
    ref_tensors = {}
    for name, t in raw.items():
        if name.endswith("_scale_inv"):
            continue
        if t.dtype == torch.float8_e4m3fn:
            s = raw[name + "_scale_inv"]
            w = _loop_dequant(t, s)
            step = s.repeat_interleave(BLOCK[0], 0)[: w.shape[0]].repeat_interleave(BLOCK[1], 1)[:, : w.shape[1]]
            # e4m3: 3 mantissa bits (half-step 2**-4 relative), subnormals below 2**-6 spaced 2**-9 (x scale)
            bound = 2**-4 * orig[name].abs() + 2**-10 * step + 1e-7
            assert bool(((w - orig[name]).abs() <= bound).all()), name
            t = w
        ref_tensors[name] = t
    save_file(ref_tensors, ref_dir / "model.safetensors", metadata={"format": "pt"})
    ref = _prefill_logits(load_model(ref_dir), prompts)
    got = _prefill_logits(load_model(fp8_dir), prompts)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, _prefill_logits(load_model(hf_dir), prompts), rtol=1e-3, atol=1e-3)


def _edit(src, dst, edit_tensors=None, edit_config=None):
    shutil.copytree(src, dst)
    if edit_tensors:
        t = load_file(dst / "model.safetensors")
        edit_tensors(t)
        save_file(t, dst / "model.safetensors", metadata={"format": "pt"})
    if edit_config:
        cfg = json.loads((dst / "config.json").read_text())
        edit_config(cfg)
        (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_fp8_errors_name_the_tensor(fp8_dir, tmp_path):
    name = "model.layers.0.mlp.up_proj.weight"
    bad = _edit(fp8_dir, tmp_path / "noscale", lambda t: t.pop(name + "_scale_inv"))
    with pytest.raises(CloudMatrixError, match=rf"{name} is torch.float8_e4m3fn .* lacks .*{name}_scale_inv"):
        load_model(bad)
    bad = _edit(fp8_dir, tmp_path / "nocfg", edit_config=lambda c: c.pop("quantization_config"))
    with pytest.raises(CloudMatrixError, match="no quantization_config"):
        load_model(bad)
    bad = _edit(fp8_dir, tmp_path / "block", edit_config=lambda c: c["quantization_config"].update(
        weight_block_size=[16, 16]))  # fmt: skip
    with pytest.raises(CloudMatrixError, match=r"_scale_inv has shape .* 16x16 blocks"):
        load_model(bad)
    with pytest.raises(CloudMatrixError, match="quant_method 'awq' is not supported"):
        ModelConfig.from_dict({**json.loads((fp8_dir / "config.json").read_text()),
                               "quantization_config": {"quant_method": "awq"}})  # fmt: skip


def test_unexpected_tensor_is_an_error(hf_dir, tmp_path):
    def add(t):
        t["model.layers.1.self_attn.extra_proj.weight"] = torch.zeros(2, 2)

    with pytest.raises(CloudMatrixError, match=r"does not use, e\.g\. model\.layers\.1\.self_attn\.extra_proj"):
        load_model(_edit(hf_dir, tmp_path / "extra", add))

    def nine_experts(t):  # a ninth expert the config (8) does not have
        for p in ("gate", "up", "down"):
            src = t[f"model.layers.1.mlp.experts.0.{p}_proj.weight"]
            t[f"model.layers.1.mlp.experts.8.{p}_proj.weight"] = src.clone()

    with pytest.raises(CloudMatrixError, match=r"experts\.8\."):
        load_model(_edit(hf_dir, tmp_path / "nine", nine_experts))


TINY = dict(
    vocab_size=48, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=2,
    num_attention_heads=2, kv_lora_rank=16, q_lora_rank=None, qk_nope_head_dim=8, qk_rope_head_dim=4,
    v_head_dim=8, n_routed_experts=4, num_experts_per_tok=2, first_k_dense_replace=1, initializer_range=0.2,
)  # fmt: skip


def _check_backend_reach(model, key_suffix: str, prompts):
    sd = model.state_dict()
    keys = [k for k in sd if k.startswith("layers.1.mlp.experts.")]
    assert any(k.endswith(key_suffix) for k in keys), keys
    before = _prefill_logits(model, prompts)
    # load_state_dict reaches the backend: zeroing the experts changes the output, restoring it restores it
    zeroed = {k: (torch.zeros_like(v) if k in keys else v) for k, v in sd.items()}
    saved = {k: v.clone() for k, v in sd.items()}
    model.load_state_dict(zeroed)
    assert not torch.allclose(_prefill_logits(model, prompts), before)
    model.load_state_dict(saved)
    torch.testing.assert_close(_prefill_logits(model, prompts), before, rtol=0, atol=0)
    # .to(dtype) reaches the floating-point expert tensors
    model.to(torch.float64)
    floats = [k for k in keys if model.state_dict()[k].is_floating_point()]
    assert floats and all(model.state_dict()[k].dtype == torch.float64 for k in floats)


def test_to_and_state_dict_reach_local_and_int8_backends():
    prompts = [[1, 2, 3, 4], [5, 6]]
    cfg = ModelConfig.from_dict(dict(TINY))
    _check_backend_reach(random_model(cfg, seed=1), "gate_up", prompts)
    q = random_model(cfg, seed=1)
    quantize_model(q)
    _check_backend_reach(q, "gate_up_q", prompts)


@pytest.fixture
def one_rank_group():
    if dist.is_initialized():
        pytest.skip("a process group is already up in this process")
    store = dist.TCPStore("127.0.0.1", 0, 1, is_master=True, timeout=timedelta(seconds=30))
    dist.init_process_group("gloo", store=store, rank=0, world_size=1, timeout=timedelta(seconds=30))
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_to_and_state_dict_reach_the_ep_backend(one_rank_group, tmp_path):
    prompts = [[1, 2, 3, 4], [5, 6]]
    cfg = ModelConfig.from_dict(dict(TINY))
    model = random_model(cfg, seed=1)
    use_expert_parallel(model, SlotMap.build(cfg.n_routed_experts, 1, slots_per_rank=5))
    _check_backend_reach(model, "gate", prompts)
    quantize_model(model)  # the EP backend re-registers its slots as int8 buffers
    assert any(k.endswith("experts.down_q") for k in model.state_dict())
