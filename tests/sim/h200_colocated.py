"""The TOML head of a small colocated DeepSeek-R1 deployment on HGX H200 (FP8 weights and KV, experts placed
as they come) that the scheduling, mixed-step and polling tests vary: `[colocated]` gets the keys given, in order."""

from __future__ import annotations


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return f'"{v}"' if isinstance(v, str) else str(v)


def h200_colocated(name: str = "coloc", **colocated) -> str:
    keys = "".join(f"{k} = {toml_value(v)}\n" for k, v in colocated.items())
    return (
        f'name = "{name}"\nsystem = "hgx-h200"\nmodel = "deepseek-r1"\nmode = "colocated"\n'
        '[precision]\nweights = "fp8"\nkv_cache = "fp8"\n[experts]\nplacement = "none"\n[colocated]\n' + keys
    )
