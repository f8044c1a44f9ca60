"""Which published launch-recipe entry a measured disaggregated row ran: the one rule both recipe tables use
(silicon_recipes.PD_RECIPES for SGLang, silicon_trtllm_recipes.TRTLLM_PD_RECIPES for TensorRT-LLM)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

from cloudmatrix.validate.silicon_csv import PoolLayout, SiliconRow


class RecipeEntry(Protocol):
    system: str
    precision: str
    image: str
    isl_osl: tuple[int, int]
    concurrencies: tuple[int, ...]
    prefill: tuple[int, int, int, int]
    decode: tuple[int, int, int, int]


E = TypeVar("E", bound=RecipeEntry)


def layout_key(p: PoolLayout | None) -> tuple[int | None, ...]:
    """(workers, attention TP, attention DP, EP): how an InferenceMAX entry names a pool (a dp-attn entry's tp is
    its attention-DP size: tp 8, ep 8, dp-attn true -> (workers, 1, 8, 8))."""
    return (None,) * 4 if p is None else (p.workers, p.tp, p.attention_dp, p.moe_ep)


def find_entry(entries: Iterable[E], row: SiliconRow) -> E | None:
    """The entry whose system, precision, image (the CSV's backend version), ISL/OSL and both layouts match the
    row and whose concurrency list holds its concurrency; None if none does."""
    key = (row.system, row.precision, row.backend_version, (row.isl, row.osl))
    layouts = (layout_key(row.prefill), layout_key(row.decode))
    for e in entries:
        same = (e.system, e.precision, e.image, e.isl_osl) == key and (e.prefill, e.decode) == layouts
        if same and row.concurrency in e.concurrencies:
            return e
    return None
