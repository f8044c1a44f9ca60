"""Tiny DeepSeek-V3 checkpoints made with transformers, shared by the engine model tests."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

TINY = dict(
    vocab_size=96,
    hidden_size=64,
    intermediate_size=96,
    moe_intermediate_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=4,
    n_routed_experts=8,
    n_shared_experts=1,
    num_experts_per_tok=3,
    n_group=4,
    topk_group=2,
    first_k_dense_replace=1,
    routed_scaling_factor=2.5,
    kv_lora_rank=32,
    q_lora_rank=48,
    qk_nope_head_dim=16,
    qk_rope_head_dim=8,
    v_head_dim=12,
    max_position_embeddings=512,
    rope_scaling={
        "rope_type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 128,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "beta_fast": 32,
        "beta_slow": 1,
    },
    initializer_range=0.2,
    num_nextn_predict_layers=1,
    eos_token_id=None,
    bos_token_id=None,
    pad_token_id=0,
)


def make_hf_model(seed: int = 0, **overrides):
    """A random transformers DeepseekV3ForCausalLM, every weight perturbed so that bugs show."""
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    torch.manual_seed(seed)
    config = DeepseekV3Config(**{**TINY, **overrides})
    config._attn_implementation = "eager"
    model = DeepseekV3ForCausalLM(config).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # RMSNorm weights near 1, not exactly 1
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
        for layer in model.model.layers:
            gate = getattr(layer.mlp, "gate", None)
            if gate is not None:  # a non-zero load-balancing bias, to prove it only steers selection
                bias = gate.e_score_correction_bias
                bias.copy_(0.3 * torch.randn(bias.shape, generator=g))
    return model


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def hf_model():
    return make_hf_model()


@pytest.fixture(scope="session")
def hf_dir(hf_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("dsv3")
    hf_model.save_pretrained(path)
    return path
