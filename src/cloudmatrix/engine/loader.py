"""Load a DeepSeek-V3 checkpoint in Hugging Face layout into `DeepseekV3`, or build a random one.

Layout: `config.json` plus `model.safetensors`, or shards listed in `model.safetensors.index.json`.
Names are HF's (`model.layers.N.self_attn.kv_b_proj.weight`, ...). Routed experts come one tensor per
expert (`model.layers.N.mlp.experts.E.{gate,up,down}_proj.weight`) and are stacked into
`ExpertWeights`; transformers' in-memory fused form (`mlp.experts.gate_up_proj` [E, 2I, H],
`mlp.experts.down_proj`) is accepted too. MTP modules live at `model.layers.{num_hidden_layers + k}`.
Every missing, mis-shaped or unused tensor raises CloudMatrixError naming it. Block-FP8 checkpoints
(DeepSeek's `weight_scale_inv` companions, `quantization_config` in config.json) are dequantised to
the model dtype on load. Under an expert placement a rank reads only its own experts' bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from cloudmatrix.engine.model.config import ModelConfig
from cloudmatrix.engine.model.experts import ExpertWeights, LocalExperts
from cloudmatrix.engine.model.model import DeepseekV3
from cloudmatrix.engine.model.moe import MoE
from cloudmatrix.engine.parallel.placement import SlotMap
from cloudmatrix.engine.quant.fp8 import SCALE_SUFFIX, dequantize_block_fp8, is_fp8, scale_name
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

    def get_rows(self, name: str, rows: list[int]) -> torch.Tensor:
        """Only `rows` of dim 0 (e.g. one EP rank's experts of a stacked tensor): the rest is never read."""
        sl = self._handle(name).get_slice(name)
        return torch.cat([sl[r : r + 1] for r in rows]) if rows else sl[0:0]

    def names(self) -> list[str]:
        return list(self._files)


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

    def get_rows(self, name: str, rows: list[int]) -> torch.Tensor:
        return self._t[name][torch.as_tensor(rows, dtype=torch.long)]

    def names(self) -> list[str]:
        return list(self._t)


def hf_name(ours: str, num_hidden_layers: int) -> str:
    """Our parameter name -> the HF checkpoint's."""
    head, _, rest = ours.partition(".")
    if head == "mtp":
        k, _, rest = rest.partition(".")
        return f"model.layers.{num_hidden_layers + int(k)}.{rest}"
    if head == "lm_head":
        return ours
    return f"model.{ours}"


def load_model(
    path: str | Path,
    dtype: torch.dtype = torch.float32,
    mtp: bool | None = None,
    *,
    placement: SlotMap | None = None,
    group: Any = None,
    **ep_kwargs: Any,
) -> DeepseekV3:
    """Load config.json + safetensors from a folder.

    mtp: True requires the MTP weights, False skips them, None loads them when the checkpoint has them.
    placement: an expert-parallel rank (torch.distributed initialised) reads only the routed experts of
    its own slots from the files and gets ExpertParallelExperts backends (ep_kwargs go to them).
    """
    config = ModelConfig.from_json(path)
    return load_tensors(config, TensorSource(path), dtype, mtp, placement=placement, group=group, **ep_kwargs)


class _Reader:
    """Fetches checked tensors from a source, dequantising block-FP8 ones, and remembers what it read."""

    def __init__(self, config: ModelConfig, source: TensorSource | DictSource, dtype: torch.dtype):
        self.config, self.source, self.dtype = config, source, dtype
        self.used: set[str] = set()

    def check(self, name: str, expected: tuple[int, ...]) -> None:
        if name not in self.source:
            raise CloudMatrixError(
                f"checkpoint lacks tensor {name} (expected shape {list(expected)} from config.json); "
                "the checkpoint and its config do not match"
            )
        found = self.source.shape(name)
        if found != expected:
            raise CloudMatrixError(
                f"tensor {name} has shape {list(found)}, expected {list(expected)} from config.json; "
                "the checkpoint and its config do not match"
            )

    def __call__(
        self, name: str, expected: tuple[int, ...], keep_fp32: bool = False, rows: list[int] | None = None
    ) -> torch.Tensor:
        """Tensor `name` (only `rows` of dim 0 when given) in the model dtype (fp32 when keep_fp32)."""
        self.check(name, expected)
        src = self.source
        t = src.get(name) if rows is None else src.get_rows(name, rows)
        self.used.add(name)
        if is_fp8(t):
            t = self._dequantize(name, t, rows)
        return t.to(torch.float32 if keep_fp32 else self.dtype)

    def _dequantize(self, name: str, t: torch.Tensor, rows: list[int] | None) -> torch.Tensor:
        block = self.config.fp8_block_size
        if block is None:
            raise CloudMatrixError(
                f"tensor {name} is {t.dtype} but config.json has no quantization_config; "
                "add DeepSeek's block-FP8 quantization_config or pass a float checkpoint"
            )
        sname = scale_name(name)
        if sname not in self.source:
            raise CloudMatrixError(
                f"tensor {name} is {t.dtype} but the checkpoint lacks its block scales {sname}; "
                "the FP8 checkpoint is incomplete"
            )
        scale = self.source.get(sname) if rows is None else self.source.get_rows(sname, rows)
        self.used.add(sname)
        return dequantize_block_fp8(name, t, scale, block)

    def unexpected(self, ignorable) -> list[str]:
        return [n for n in self.source.names() if n not in self.used and not ignorable(n)]


_EXPERT_NAME = re.compile(r"\.mlp\.experts\.(\d+)\.")


def load_tensors(
    config: ModelConfig,
    source: TensorSource | DictSource | Mapping[str, torch.Tensor],
    dtype: torch.dtype = torch.float32,
    mtp: bool | None = None,
    *,
    placement: SlotMap | None = None,
    group: Any = None,
    **ep_kwargs: Any,
) -> DeepseekV3:
    """Build a DeepseekV3 for `config` from HF-named tensors (files or an in-memory dict).

    Every tensor the model needs must be there with the config's shape, and every tensor there must
    be used (or be a known duplicate: MTP's copies of embed_tokens / the LM head; MTP layers when
    mtp=False; other ranks' experts under a placement): anything else is a CloudMatrixError.
    """
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
    fetch = _Reader(config, source, dtype)

    # Routed experts first: each MoE layer gets its backend (all experts, or this rank's slots).
    E, H, I = config.n_routed_experts, config.hidden_size, config.moe_intermediate_size
    slots = None
    if placement is not None:
        from cloudmatrix.engine.parallel.expert_parallel import ExpertParallelExperts

        if not dist.is_initialized():
            raise CloudMatrixError("loading with an expert placement needs torch.distributed initialised first")
        if placement.num_experts != E:
            raise CloudMatrixError(
                f"the placement has {placement.num_experts} experts but config.json has n_routed_experts={E}"
            )
        slots = placement.experts_on(dist.get_rank(group))
    n_moe = 0  # EP call tags in layer order, as use_expert_parallel numbers them
    for ours, module in model.named_modules():
        if not isinstance(module, MoE):
            continue
        prefix = hf_name(ours, L) + ".experts"
        ids = list(range(E)) if slots is None else slots
        if f"{prefix}.gate_up_proj" in source:  # transformers' in-memory layout
            gate, up = fetch(f"{prefix}.gate_up_proj", (E, 2 * I, H), rows=ids).chunk(2, dim=1)
            down = fetch(f"{prefix}.down_proj", (E, H, I), rows=ids)
        else:
            gate = torch.stack([fetch(f"{prefix}.{e}.gate_proj.weight", (I, H)) for e in ids])
            up = torch.stack([fetch(f"{prefix}.{e}.up_proj.weight", (I, H)) for e in ids])
            down = torch.stack([fetch(f"{prefix}.{e}.down_proj.weight", (H, I)) for e in ids])
        weights = ExpertWeights(gate, up, down)
        if placement is None:
            module.experts = LocalExperts(weights)
        else:
            module.experts = ExpertParallelExperts(weights, placement, group, tag=n_moe, **ep_kwargs)
        n_moe += 1
    expert_keys = {k for k, _ in model.named_buffers() if ".experts." in k}

    state: dict[str, torch.Tensor] = {}
    for ours, p in [*model.named_parameters(), *model.named_buffers()]:
        if ours in expert_keys:
            continue
        name = hf_name(ours, L)
        if name == "lm_head.weight" and config.tie_word_embeddings and name not in source:
            name = "model.embed_tokens.weight"
        state[ours] = fetch(name, tuple(p.shape), keep_fp32=ours.endswith("e_score_correction_bias"))
    missing, unexpected = model.load_state_dict(state, assign=True, strict=False)
    assert not unexpected and set(missing) <= expert_keys, (missing, unexpected)

    mtp_prefixes = tuple(f"model.layers.{L + k}." for k in range(n_mtp))
    shared_copies = {f"{p}{n}" for p in mtp_prefixes for n in ("embed_tokens.weight", "shared_head.head.weight")}
    held = None if slots is None else set(slots)

    def ignorable(name: str) -> bool:
        base = name.removesuffix(SCALE_SUFFIX)
        if base in shared_copies or base.endswith("rotary_emb.inv_freq"):
            return True
        if not mtp and base.startswith(mtp_prefixes):
            return True
        m = _EXPERT_NAME.search(base)
        return held is not None and m is not None and int(m.group(1)) not in held

    extra = fetch.unexpected(ignorable)
    if extra:
        raise CloudMatrixError(
            f"checkpoint has {len(extra)} tensor(s) the model does not use, e.g. {extra[0]}; "
            "the checkpoint and its config.json do not match (layers, experts, or an unsupported format)"
        )
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
        if ".experts." in ours:  # the routed experts' buffers: written below in the checkpoint layout
            continue
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
