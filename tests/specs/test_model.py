"""Model catalog: the shipped configs reproduce published parameter counts; bad configs fail clearly."""

import json

import pytest

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.specs.model import load_model, model_names, spec_from_config


def rel(a, b):
    return abs(a - b) / b


def test_catalog_names():
    assert {
        "deepseek-v3",
        "deepseek-r1",
        "kimi-k2",
        "qwen3-235b-a22b",
        "qwen3-30b-a3b",
        "llama-3.1-70b",
        "llama-3.1-405b",
    } <= set(model_names())


def test_deepseek_v3_published_figures():
    m = load_model("deepseek-v3")
    # DeepSeek-V3 report: 671B total, 37B activated; MTP module 14B incl. its (shared) embedding and head
    assert rel(m.total_params(), 671e9) < 0.02
    assert rel(m.activated_params(), 37e9) < 0.02
    assert rel(m.total_params(include_mtp=True) + 2 * m.embedding_params(), 685e9) < 0.02
    # MLA caches the 512-d latent + the 64-d shared rope key per layer
    assert m.kv_elements_per_token_per_layer() == 512 + 64
    assert m.kv_bytes_per_token("bf16") == (512 + 64) * 61 * 2
    assert m.kv_bytes_per_token("int8") == (512 + 64) * 61
    assert (m.dense_layers, m.moe_layers, m.mtp_layers) == (3, 58, 1)


def test_deepseek_r1_shares_the_v3_architecture():
    v3, r1 = load_model("deepseek-v3"), load_model("deepseek-r1")
    assert r1.components() == v3.components()


def test_kimi_k2():
    m = load_model("kimi-k2")
    assert m.model_type == "kimi_k2" and m.attention == "mla"  # DeepseekV3ForCausalLM under its own type
    # Kimi K2 technical report: 1.04T total, 32.6B activated
    assert rel(m.total_params(), 1.04e12) < 0.02
    assert rel(m.activated_params(), 32.6e9) < 0.02
    assert (m.heads, m.routed_experts, m.dense_layers, m.mtp_layers) == (64, 384, 1, 0)
    assert m.kv_bytes_per_token("bf16") == (512 + 64) * 61 * 2


def test_qwen3_moe():
    m = load_model("qwen3-235b-a22b")
    assert rel(m.total_params(), 235e9) < 0.02 and rel(m.activated_params(), 22e9) < 0.02
    # Qwen3 sets head_dim = 128 explicitly, though hidden / heads = 64
    assert m.head_dim == 128 and m.hidden // m.heads == 64
    assert m.kv_bytes_per_token("bf16") == 2 * 4 * 128 * 94 * 2
    small = load_model("qwen3-30b-a3b")
    assert rel(small.total_params(), 30.5e9) < 0.02 and rel(small.activated_params(), 3.3e9) < 0.03


def test_llama():
    big, mid = load_model("llama-3.1-405b"), load_model("llama-3.1-70b")
    assert rel(big.total_params(), 405e9) < 0.02 and rel(mid.total_params(), 70.6e9) < 0.02
    assert not big.is_moe and big.activated_params() == big.total_params()
    assert mid.kv_bytes_per_token("bf16") == 2 * 8 * 128 * 80 * 2


def test_flops_and_weight_bytes():
    m = load_model("deepseek-v3")
    matmul = 2 * (m.activated_params() - m.embedding_params())
    assert m.decode_flops_per_token(0) == matmul
    assert m.decode_flops_per_token(4096) > m.decode_flops_per_token(1024) > matmul
    assert m.prefill_flops_per_token(4096) > matmul
    # INT8 halves the big matmul weights; norms, router and embeddings stay BF16
    assert 0.5 < m.weight_bytes("int8") / m.weight_bytes("bf16") < 0.505
    with pytest.raises(CloudMatrixError, match="unknown precision"):
        m.weight_bytes("int3")


LLAMA_TINY = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 4,
    "intermediate_size": 128,
    "vocab_size": 100,
}
QWEN_MOE_TINY = {
    **LLAMA_TINY,
    "model_type": "qwen3_moe",
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 32,
}


def test_architecture_from_architectures_when_model_type_is_missing():
    cfg = {k: v for k, v in LLAMA_TINY.items() if k != "model_type"}
    assert spec_from_config({**cfg, "architectures": ["LlamaForCausalLM"]}, "t").attention == "gqa"
    v3 = json.loads((_models_dir() / "deepseek-v3.json").read_text())
    v3.pop("model_type")
    assert spec_from_config(v3, "v3").attention == "mla"


def _models_dir():
    from cloudmatrix.specs.model import _catalog_dir

    return _catalog_dir()


def test_multimodal_wrapper_uses_text_config():
    v3 = json.loads((_models_dir() / "kimi-k2.json").read_text())
    m = spec_from_config({"model_type": "kimi_k25", "text_config": v3}, "k25")
    assert m.total_params() == load_model("kimi-k2").total_params()


def test_moe_layer_layouts_count_dense_layers():
    assert spec_from_config(QWEN_MOE_TINY, "t").dense_layers == 0
    assert spec_from_config({**QWEN_MOE_TINY, "decoder_sparse_step": 2}, "t").dense_layers == 2
    assert spec_from_config({**QWEN_MOE_TINY, "mlp_only_layers": [0]}, "t").dense_layers == 1
    ds = {**QWEN_MOE_TINY, "first_k_dense_replace": 1, "moe_layer_freq": 2}  # MoE at layers 1 and 3
    assert spec_from_config(ds, "t").dense_layers == 2


@pytest.mark.parametrize(
    "cfg, needle",
    [
        ({**LLAMA_TINY, "model_type": "gpt2"}, "unsupported architecture model_type='gpt2'"),
        ({k: v for k, v in LLAMA_TINY.items() if k != "vocab_size"}, "has no 'vocab_size'"),
        ({**LLAMA_TINY, "hidden_size": "big"}, "hidden_size = 'big' is not an integer"),
        ({**LLAMA_TINY, "num_hidden_layers": -1}, "num_hidden_layers = -1 must be at least 1"),
        ({**LLAMA_TINY, "num_key_value_heads": 3}, "not a multiple of num_key_value_heads=3"),
        ({**QWEN_MOE_TINY, "num_experts_per_tok": 9}, "exceeds the 8 experts"),
        ({**QWEN_MOE_TINY, "mlp_only_layers": [7]}, "mlp_only_layers"),
        ({**QWEN_MOE_TINY, "first_k_dense_replace": 9}, "exceeds num_hidden_layers"),
    ],
    ids=["arch", "missing", "type", "negative", "gqa", "topk", "mlp-only", "first-k"],
)
def test_bad_configs_name_file_and_field(cfg, needle):
    with pytest.raises(CloudMatrixError) as e:
        spec_from_config(cfg, "t", "/x/config.json")
    assert str(e.value).startswith("/x/config.json: ") and needle in str(e.value)


def test_load_model_from_path_and_errors(tmp_path):
    d = tmp_path / "tiny"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(LLAMA_TINY))
    m = load_model(str(d))
    assert m.name == "tiny" and m.head_dim == 16
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(CloudMatrixError, match="not valid JSON"):
        load_model(str(tmp_path / "bad.json"))
    with pytest.raises(CloudMatrixError, match="unknown model 'gpt-9'; known: .*deepseek-r1"):
        load_model("gpt-9")
