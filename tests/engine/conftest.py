"""Tiny DeepSeek-V3 checkpoints made with transformers, shared by the engine model tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from safetensors.torch import load_file, save_file  # noqa: E402

from cloudmatrix.engine.loader import random_state  # noqa: E402
from cloudmatrix.engine.model.config import ModelConfig  # noqa: E402
from cloudmatrix.engine.model.model import DeepseekV3  # noqa: E402

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


PROMPTS = [[5, 7, 9, 11, 3, 2, 8], [4, 4, 1], [9, 8, 7, 6, 5, 4, 3, 2, 1, 10, 12, 13, 17, 19, 23, 29, 31, 37]]


@torch.inference_mode()
def teacher_forced_logits(
    model: DeepseekV3, seqs: list[list[int]], prompt_lens: list[int], block_size: int = 4
) -> list[torch.Tensor]:
    """Per sequence, logits [len, V]: one batched prefill of the prompts, then batched one-token decode
    steps feeding the given continuation (sequences that ran out are dropped from the batch)."""
    cache = model.new_cache(num_blocks=sum(len(s) // block_size + 2 for s in seqs), block_size=block_size)
    ids = [cache.add_sequence() for _ in seqs]
    batch = cache.plan(ids, prompt_lens)
    h = model(torch.tensor([t for s, n in zip(seqs, prompt_lens, strict=True) for t in s[:n]]), batch, cache)
    out = [[x] for x in model.logits(h).split(prompt_lens)]
    pos = list(prompt_lens)
    while True:
        active = [i for i, s in enumerate(seqs) if pos[i] < len(s)]
        if not active:
            break
        batch = cache.plan([ids[i] for i in active], [1] * len(active))
        logits = model.logits(model(torch.tensor([seqs[i][pos[i]] for i in active]), batch, cache))
        for k, i in enumerate(active):
            out[i].append(logits[k : k + 1])
            pos[i] += 1
    return [torch.cat(x) for x in out]


def add_mtp_tensors(folder: Path, seed: int = 7) -> None:
    """Append random MTP weights at model.layers.{num_hidden_layers}.* (DeepSeek-V3 layout) to a
    single-file checkpoint, including the duplicated embed_tokens / shared_head.head tensors."""
    config = ModelConfig.from_json(folder)
    L = config.num_hidden_layers
    tensors = load_file(folder / "model.safetensors")
    prefix = f"model.layers.{L}."
    extra = {k: v for k, v in random_state(config, seed=seed, num_mtp=1).items() if k.startswith(prefix)}
    extra[prefix + "embed_tokens.weight"] = tensors["model.embed_tokens.weight"].clone()
    extra[prefix + "shared_head.head.weight"] = tensors["lm_head.weight"].clone()
    save_file({**tensors, **extra}, folder / "model.safetensors", metadata={"format": "pt"})
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["num_nextn_predict_layers"] == 1


TOKENIZER_TEXT = [
    "To be, or not to be, that is the question:",
    "Whether 'tis nobler in the mind to suffer",
    "The slings and arrows of outrageous fortune,",
    "Or to take arms against a sea of troubles",
]
EOS_ID = 1  # "<eos>" in the tokenizer below


def write_tokenizer(folder: Path, vocab_size: int = 96) -> None:
    """A tiny BPE `tokenizers` tokenizer (Metaspace, ids < vocab_size) plus the HF side files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<eos>", "<unk>"])
    tok.train_from_iterator(TOKENIZER_TEXT * 20, trainer)
    assert tok.get_vocab_size() <= vocab_size and tok.token_to_id("<eos>") == EOS_ID
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>"}))
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": EOS_ID}))


# Helpers reach the tests as fixtures: test modules never import conftest by name.
@pytest.fixture(scope="session")
def prompts() -> list[list[int]]:
    return [list(p) for p in PROMPTS]


@pytest.fixture(scope="session")
def make_hf():
    return make_hf_model


@pytest.fixture(scope="session")
def forced_logits():
    return teacher_forced_logits


@pytest.fixture(scope="session")
def with_mtp():
    return add_mtp_tensors


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


@pytest.fixture(scope="session")
def model_dir(hf_dir, tmp_path_factory):
    """A complete tiny model folder: the random checkpoint, MTP weights, tokenizer, EOS id."""
    import shutil

    folder = tmp_path_factory.mktemp("dsv3_full")
    shutil.copytree(hf_dir, folder, dirs_exist_ok=True)
    add_mtp_tensors(folder)
    write_tokenizer(folder)
    return folder
