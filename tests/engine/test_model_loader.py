"""Loader errors name the tensor and both shapes; config parsing errors say what is wrong."""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
from safetensors.torch import load_file, save_file  # noqa: E402

from cloudmatrix.engine.loader import load_model  # noqa: E402
from cloudmatrix.engine.model.config import ModelConfig  # noqa: E402
from cloudmatrix.errors import CloudMatrixError  # noqa: E402


def _edit_checkpoint(src, dst, edit) -> None:
    shutil.copytree(src, dst)
    tensors = load_file(dst / "model.safetensors")
    edit(tensors)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})


def test_missing_tensor_is_named(hf_dir, tmp_path):
    name = "model.layers.1.self_attn.kv_b_proj.weight"
    _edit_checkpoint(hf_dir, tmp_path / "ck", lambda t: t.pop(name))
    with pytest.raises(CloudMatrixError, match=r"lacks tensor model\.layers\.1\.self_attn\.kv_b_proj\.weight") as e:
        load_model(tmp_path / "ck")
    assert "[112, 32]" in str(e.value)  # expected shape: heads * (qk_nope + v) x kv_lora_rank


def test_missing_expert_is_named(hf_dir, tmp_path):
    name = "model.layers.2.mlp.experts.5.up_proj.weight"
    _edit_checkpoint(hf_dir, tmp_path / "ck", lambda t: t.pop(name))
    with pytest.raises(CloudMatrixError, match=r"model\.layers\.2\.mlp\.experts\.5\.up_proj\.weight"):
        load_model(tmp_path / "ck")


def test_misshaped_tensor_names_expected_and_found(hf_dir, tmp_path):
    name = "model.layers.2.mlp.experts.3.down_proj.weight"

    def shrink(t):
        t[name] = t[name][:, :-1].contiguous()

    _edit_checkpoint(hf_dir, tmp_path / "ck", shrink)
    with pytest.raises(CloudMatrixError) as e:
        load_model(tmp_path / "ck")
    msg = str(e.value)
    assert name in msg and "[64, 31]" in msg and "expected [64, 32]" in msg


def test_missing_mtp_weights_when_required(hf_dir):
    with pytest.raises(CloudMatrixError, match=r"lacks tensor model\.layers\.3\."):  # the MTP layer
        load_model(hf_dir, mtp=True)
    assert len(load_model(hf_dir).mtp) == 0  # auto: no MTP tensors, no MTP module


def test_missing_files_and_bad_configs(tmp_path, hf_dir):
    with pytest.raises(CloudMatrixError, match="no config"):
        load_model(tmp_path)
    shutil.copy(hf_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(CloudMatrixError, match="no model.safetensors"):
        load_model(tmp_path)
    cfg = json.loads((hf_dir / "config.json").read_text())
    with pytest.raises(CloudMatrixError, match="n_group"):
        ModelConfig.from_dict({**cfg, "n_group": 3})
    with pytest.raises(CloudMatrixError, match="kv_lora_rank"):
        ModelConfig.from_dict({k: v for k, v in cfg.items() if k != "kv_lora_rank"})


def test_original_deepseek_rope_keys_are_understood(hf_dir):
    """DeepSeek's own config.json spells rope as `rope_theta` + `rope_scaling` with `type`."""
    cfg = json.loads((hf_dir / "config.json").read_text())
    rope = dict(cfg.pop("rope_parameters"))
    theta = rope.pop("rope_theta")
    rope["type"] = rope.pop("rope_type")
    old = ModelConfig.from_dict({**cfg, "rope_theta": theta, "rope_scaling": rope})
    new = ModelConfig.from_dict(json.loads((hf_dir / "config.json").read_text()))
    assert old.rope_type == new.rope_type == "yarn" and old.rope_theta == new.rope_theta
    assert old.rope_scaling["factor"] == new.rope_scaling["factor"] == 4.0


@pytest.mark.parametrize("key", ["tie_word_embeddings", "norm_topk_prob", "rope_interleave", "attention_bias"])
def test_boolean_fields_must_be_json_booleans(hf_dir, key):
    """`"false"` as a string used to read as True (bool of a non-empty string)."""
    cfg = json.loads((hf_dir / "config.json").read_text())
    with pytest.raises(CloudMatrixError, match=f"{key} must be true or false"):
        ModelConfig.from_dict({**cfg, key: "false"})
    assert getattr(ModelConfig.from_dict({**cfg, key: False}), key) is False
    assert getattr(ModelConfig.from_dict({**cfg, key: True}), key) is True
