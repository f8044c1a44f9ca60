"""Load a DeepSeek-V3 checkpoint in Hugging Face layout into `DeepseekV3`, or build a random one.

Layout: `config.json` plus `model.safetensors`, or shards listed in `model.safetensors.index.json`.
Names are HF's (`model.layers.N.self_attn.kv_b_proj.weight`, ...). Routed experts come one tensor per
expert (`model.layers.N.mlp.experts.E.{gate,up,down}_proj.weight`) and are stacked into
`ExpertWeights`; transformers' in-memory fused form (`mlp.experts.gate_up_proj` [E, 2I, H],
`mlp.experts.down_proj`) is accepted too. MTP modules live at `model.layers.{num_hidden_layers + k}`.
Every missing or mis-shaped tensor raises CloudMatrixError naming it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cloudmatrix.engine.model.config import ModelConfig
from cloudmatrix.engine.model.experts import ExpertWeights, LocalExperts
from cloudmatrix.engine.model.model import DeepseekV3
from cloudmatrix.engine.model.moe import MoE
from cloudmatrix.errors import CloudMatrixError


class TensorSource:
    """Named tensors read lazily from safetensors files (one file or an index of shards)."""

    def __init__(self, folder: str | Path):
        from safetensors import safe_open

        folder = Path(folder)
        index = folder / "model.safetensors.index.json"
        if index.exists():
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        elif (folder / "model.safetensors").exists():
            weight_map = {}
            with safe_open(folder / "model.safetensors", "pt") as f:
                weight_map = dict.fromkeys(f.keys(), "model.safetensors")
        else:
            raise CloudMatrixError(
                f"no model.safetensors or model.safetensors.index.json in {folder}; "
                "point at a Hugging Face model folder"
            )
        self._files = {name: folder / file for name, file in weight_map.items()}
        self._open: dict[Path, Any] = {}
        self._safe_open = safe_open

    def _handle(self, name: str) -> Any:  # safetensors' handle type is private
        path = self._files[name]
        if path not in self._open:
            if not path.exists():
                raise CloudMatrixError(f"shard {path.name} (holding {name}) is missing from {path.parent}")
            self._open[path] = self._safe_open(path, "pt")
        return self._open[path]

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handle(name).get_slice(name).get_shape())

    def get(self, name: str) -> torch.Tensor:
        return self._handle(name).get_tensor(name)


class DictSource:
    """Named tensors already in memory (e.g. a transformers model's state_dict)."""

    def __init__(self, tensors: Mapping[str, torch.Tensor]):
        self._t = tensors

    def __contains__(self, name: str) -> bool:
        return name in self._t

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._t[name].shape)

    def get(self, name: str) -> torch.Tensor:
        return self._t[name]


def hf_name(ours: str, num_hidden_layers: int) -> str:
    """Our parameter name -> the HF checkpoint's."""
    head, _, rest = ours.partition(".")
    if head == "mtp":
        k, _, rest = rest.partition(".")
        return f"model.layers.{num_hidden_layers + int(k)}.{rest}"
    if head == "lm_head":
        return ours
    return f"model.{ours}"


def load_model(path: str | Path, dtype: torch.dtype = torch.float32, mtp: bool | None = None) -> DeepseekV3:
    """Load config.json + safetensors from a folder.

    mtp: True requires the MTP weights, False skips them, None loads them when the checkpoint has them.
    """
    config = ModelConfig.from_json(path)
    return load_tensors(config, TensorSource(path), dtype, mtp)


def load_tensors(
    config: ModelConfig,
    source: TensorSource | DictSource | Mapping[str, torch.Tensor],
    dtype: torch.dtype = torch.float32,
    mtp: bool | None = None,
) -> DeepseekV3:
    """Build a DeepseekV3 for `config` from HF-named tensors (files or an in-memory dict)."""
    if not isinstance(source, TensorSource | DictSource):
        source = DictSource(source)
    L = config.num_hidden_layers
    n_mtp = config.num_nextn_predict_layers
    if mtp is None:
        mtp = n_mtp > 0 and f"model.layers.{L}.eh_proj.weight" in source
    if mtp and n_mtp == 0:
        raise CloudMatrixError("MTP weights requested but config.json has num_nextn_predict_layers = 0")
    with torch.device("meta"):
        model = DeepseekV3(config, num_mtp=n_mtp if mtp else 0)

    def fetch(name: str, expected: tuple[int, ...], keep_fp32: bool = False) -> torch.Tensor:
        if name not in source:
            raise CloudMatrixError(
                f"checkpoint lacks tensor {name} (expected shape {list(expected)} from config.json); "
                "the checkpoint and its config do not match"
            )
        found = source.shape(name)
        if found != expected:
            raise CloudMatrixError(
                f"tensor {name} has shape {list(found)}, expected {list(expected)} from config.json; "
                "the checkpoint and its config do not match"
            )
        return source.get(name).to(torch.float32 if keep_fp32 else dtype)

    state: dict[str, torch.Tensor] = {}
    for ours, p in [*model.named_parameters(), *model.named_buffers()]:
        name = hf_name(ours, L)
        if name == "lm_head.weight" and config.tie_word_embeddings and name not in source:
            name = "model.embed_tokens.weight"
        state[ours] = fetch(name, tuple(p.shape), keep_fp32=ours.endswith("e_score_correction_bias"))
    model.load_state_dict(state, assign=True, strict=True)

    E, H, I = config.n_routed_experts, config.hidden_size, config.moe_intermediate_size
    for ours, module in model.named_modules():
        if not isinstance(module, MoE):
            continue
        prefix = hf_name(ours, L) + ".experts"
        if f"{prefix}.gate_up_proj" in source:  # transformers' in-memory layout
            gate, up = fetch(f"{prefix}.gate_up_proj", (E, 2 * I, H)).chunk(2, dim=1)
            down = fetch(f"{prefix}.down_proj", (E, H, I))
        else:
            gate = torch.stack([fetch(f"{prefix}.{e}.gate_proj.weight", (I, H)) for e in range(E)])
            up = torch.stack([fetch(f"{prefix}.{e}.up_proj.weight", (I, H)) for e in range(E)])
            down = torch.stack([fetch(f"{prefix}.{e}.down_proj.weight", (H, I)) for e in range(E)])
        module.experts = LocalExperts(ExpertWeights(gate, up, down))
    return model.eval()


def random_state(config: ModelConfig, seed: int = 0, num_mtp: int | None = None) -> dict[str, torch.Tensor]:
    """HF-named random float32 tensors for `config` (normal(0, initializer_range), norms at 1)."""
    n_mtp = config.num_nextn_predict_layers if num_mtp is None else num_mtp
    with torch.device("meta"):
        shell = DeepseekV3(config, num_mtp=n_mtp)
    g = torch.Generator().manual_seed(seed)
    std = config.initializer_range
    out: dict[str, torch.Tensor] = {}
    for ours, p in [*shell.named_parameters(), *shell.named_buffers()]:
        if ours.endswith("e_score_correction_bias"):
            t = torch.zeros(p.shape)
        elif p.dim() == 1:  # RMSNorm weights
            t = torch.ones(p.shape)
        else:
            t = torch.randn(p.shape, generator=g) * std
        out[hf_name(ours, config.num_hidden_layers)] = t
    E, H, I = config.n_routed_experts, config.hidden_size, config.moe_intermediate_size
    for ours, module in shell.named_modules():
        if isinstance(module, MoE):
            prefix = hf_name(ours, config.num_hidden_layers) + ".experts"
            out[f"{prefix}.gate_up_proj"] = torch.randn(E, 2 * I, H, generator=g) * std
            out[f"{prefix}.down_proj"] = torch.randn(E, H, I, generator=g) * std
    return out


def random_model(
    config: ModelConfig, seed: int = 0, dtype: torch.dtype = torch.float32, num_mtp: int | None = None
) -> DeepseekV3:
    """A randomly initialised model (benchmarks, tests); same seed, same weights."""
    n_mtp = config.num_nextn_predict_layers if num_mtp is None else num_mtp
    return load_tensors(config, random_state(config, seed, n_mtp), dtype, mtp=n_mtp > 0)
