"""Print validate/silicon_recipes.py's PD_RECIPES table (disaggregated SGLang rows) from its two public sources.

InferenceMAX's `.github/configs/nvidia-master.yaml` lists, per multi-node SGLang config
(`dsr1-<precision>-<gpu>-dynamo-sglang`), its image and per search-space entry the concurrencies, the prefill/decode
worker counts, tp/ep/dp-attn and the srt-slurm recipe it ran (`CONFIG_FILE=recipes/...`, a `file.yaml:override_x` /
`:zip_override_x[i]` selector resolved by srtctl's rule: `base` deep-merged with the override, a zip override's
list-valued leaves taken at index i, length-1 lists broadcast; srtctl `core/config.py`). For each non-MTP entry that a
complete measured row of the installed silicon set matches, the script prints the table row with what the twin takes
from the resolved recipe: the decode server's kv-cache-dtype, both servers' scheduler-recv-interval, and the prefill
server's step budget (chunked-prefill-size, which SGLang divides by the DP size under DP attention, and
max-prefill-tokens; unset = SGLang's defaults, see PREFILL_DEFAULTS), and the decode server's max-running-requests
(None where unset: the KV cache bounds it).

    python benchmarks/recipes_sglang_pd.py MIRROR_OF_INFERENCEMAX COMMIT MIRROR_OF_SRT_SLURM BRANCH

(git directories read with `git show`; the table in the repo was printed from InferenceMAX_Rocm_Team @6026f214 and
NVIDIA/srt-slurm sa-submission-q2-2026 @deb1dfd9). Needs PyYAML: a maintainer's tool, not a dependency of the twin.
"""

from __future__ import annotations

import copy
import re
import sys

from recipes_trtllm_pd import matched_entries, measured_keys, show, sources

# SGLang server_args defaults where a recipe leaves the key unset (sglang 0.5.9 srt/server_args.py): max_prefill_tokens
# 16,384; chunked_prefill_size chosen from GPU memory, 16,384 at >= 160 GB (B200, GB200, GB300; the one H200 recipe
# sets its own)
PREFILL_DEFAULTS = {"max-prefill-tokens": 16384, "chunked-prefill-size": 16384}


def deep_merge(base: dict, over: dict) -> dict:
    """srtctl's deep_merge: dicts merge, lists and scalars replace, None deletes."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def zip_slice(d: dict, i: int) -> dict:
    """srtctl's _apply_zip_slice: every list-valued leaf at index i (length-1 lists broadcast)."""
    return {
        k: (v[0 if len(v) == 1 else i] if isinstance(v, list) else zip_slice(v, i) if isinstance(v, dict) else v)
        for k, v in d.items()
    }


def resolve(doc: dict, selector: str | None) -> dict:
    if selector is None:
        return doc.get("base", doc)
    m = re.fullmatch(r"(zip_override_\w+)\[(\d+)\]", selector)
    if m:
        return deep_merge(doc["base"], zip_slice(doc[m.group(1)], int(m.group(2))))
    return deep_merge(doc["base"], doc[selector])


def main() -> int:
    import yaml

    a = sources(__doc__)
    master = yaml.safe_load(show(a.inferencemax, a.commit, ".github/configs/nvidia-master.yaml"))
    measured = measured_keys(backend="sglang")  # the TensorRT-LLM table's matching rule
    for _, system, precision, image, (isl, osl), concs, p, d, recipe in matched_entries(
        master, "dynamo-sglang", measured, lambda tag: tag.removeprefix("v").split("-")[0]
    ):
        path, _, selector = recipe.partition(":")
        sg = resolve(yaml.safe_load(show(a.srt_slurm, a.branch, path)), selector or None)["backend"]
        pre, dec = sg["sglang_config"]["prefill"], sg["sglang_config"]["decode"]
        kv = "fp8" if str(dec.get("kv-cache-dtype", "auto")).startswith("fp8") else "bf16"
        chunk = pre.get("chunked-prefill-size", PREFILL_DEFAULTS["chunked-prefill-size"])
        max_prefill = pre.get("max-prefill-tokens", PREFILL_DEFAULTS["max-prefill-tokens"])
        print(
            f'    PdRecipe("{system}", "{precision}", "{image}", ({isl}, {osl}), {concs}, {p}, {d},\n'
            f'             "{recipe}", "{kv}", {pre.get("scheduler-recv-interval", 1)}, '
            f"{dec.get('scheduler-recv-interval', 1)}, {chunk}, {max_prefill}, {dec.get('max-running-requests')}),"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
