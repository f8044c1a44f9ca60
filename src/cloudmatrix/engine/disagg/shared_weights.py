"""Model weights loaded once into shared host memory, so a (re)started worker builds its model warm.

The front process loads the checkpoint once (`share_model`): every parameter and buffer, the routed
experts included (they are buffers of their backend), moves into shared memory (`share_memory_()`).
Spawned workers receive the tensors through torch.multiprocessing (a file descriptor per storage, no
copy) and `model_from_shared` assembles a DeepseekV3 around them without reading or converting
anything. An EP rank then keeps its own expert slots (`use_expert_parallel` copies only those).
"""

from __future__ import annotations

import torch

from cloudmatrix.engine.model.config import ModelConfig
from cloudmatrix.engine.model.model import DeepseekV3


def share_model(model: DeepseekV3) -> dict[str, torch.Tensor]:
    """The model's state in shared memory (tensors are moved in place; the model keeps working)."""
    state = model.state_dict()
    for t in state.values():
        t.share_memory_()
    return state


def model_from_shared(config: ModelConfig, state: dict[str, torch.Tensor], num_mtp: int = 0) -> DeepseekV3:
    """A model whose tensors are the shared ones (no copy): what a warm worker starts from."""
    with torch.device("meta"):
        model = DeepseekV3(config, num_mtp=num_mtp)
    model.load_state_dict(state, assign=True, strict=True)
    return model.eval()
