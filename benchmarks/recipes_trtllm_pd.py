"""Print validate/silicon_trtllm_recipes.py's TRTLLM_PD_RECIPES table from the two public sources it is read from.

InferenceMAX's `.github/configs/nvidia-master.yaml` lists, per multi-node TensorRT-LLM config
(`dsr1-<precision>-<gpu>-dynamo-trt`), its Dynamo image and per search-space entry the concurrencies, the
prefill/decode worker counts, tp/ep/dp-attn and the srt-slurm recipe it ran (`CONFIG_FILE=recipes/trtllm/...`).
Each recipe's `backend.trtllm_config.prefill` is the context server's LLM-API configuration. This script joins
the two and prints one table row per non-MTP entry, with what the twin takes from the context server:
`max_batch_size` (prompts per rank per step), `max_num_tokens` (tokens per rank per step) and the KV-cache dtype;
from the generation server (`backend.trtllm_config.decode`) its `max_batch_size`, the sequences one attention-DP
rank runs at once; and how many Dynamo frontends (each its own round-robin router) the job starts.
Only entries that a complete measured row of the installed silicon set matches are printed (the table's rule).

    python benchmarks/recipes_trtllm_pd.py MIRROR_OF_INFERENCEMAX COMMIT MIRROR_OF_SRT_SLURM BRANCH \
        [--older COMMIT REVISION]

The mirrors are git directories (`git show COMMIT:path` is how files are read), e.g. the table in the repo was
printed from github.com/ajith-sirra-amd/InferenceMAX_Rocm_Team at 6026f214 and github.com/NVIDIA/srt-slurm at
sa-submission-q2-2026 (deb1dfd9), with `--older 0aae52d4 75f6e32a`: the 1k/8k entries, which InferenceMAX later
dropped from its grid, are read from its nvidia-master.yaml of 2026-02-06 (0aae52d4, the older `seq-len-configs`
layout) and their recipes from srt-slurm's main of 2026-01-27 (75f6e32a; that yaml's comments link
ishandhanani/srt-slurm sa-submission-q1-2026, not mirrored here). An older pair's entry is printed only for a system,
precision and ISL/OSL that no entry of the newer pair matches, with `source=TRT_PD_SOURCE_OLDER`. Needs PyYAML (not
a dependency of the twin: this is a maintainer's tool).
"""

from __future__ import annotations

import argparse
import functools
import re
import subprocess
import sys

# InferenceMAX GPU names -> aiconfigurator's system names (the CSV's)
SYSTEMS = {
    "b200": "b200_sxm",
    "b300": "b300_sxm",
    "h100": "h100_sxm",
    "h200": "h200_sxm",
    "gb200": "gb200",
    "gb300": "gb300",
}


def show(repo: str, rev: str, path: str) -> str:
    out = subprocess.run(["git", "-C", repo, "show", f"{rev}:{path}"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"error: cannot read {path} at {rev} in {repo}: {out.stderr.strip()}")
    return out.stdout


def layout(pool: dict) -> tuple[int, int, int, int]:
    """(workers, attention TP, attention DP, EP) in aiconfigurator's naming: a dp-attn entry's tp is its DP size."""
    if pool["dp-attn"]:
        return (pool["num-worker"], 1, pool["tp"], pool["ep"])
    return (pool["num-worker"], pool["tp"], 1, pool["ep"])


def measured_keys(backend: str = "trtllm") -> set[tuple]:
    """(system, precision, image, (isl, osl), concurrency, prefill layout, decode layout) of every complete
    disaggregated row of `backend` in the installed silicon set."""
    from cloudmatrix.validate.silicon_csv import load_silicon_set

    def lay(p):
        return (p.workers, p.tp, p.attention_dp, p.moe_ep)

    out = set()
    for m in load_silicon_set().measurements:
        r = m.row
        if r.backend == backend and r.mode == "disagg" and r.complete:
            out.add(
                (r.system, r.precision, r.backend_version, (r.isl, r.osl), r.concurrency, lay(r.prefill), lay(r.decode))
            )
    return out


def sources(doc: str | None, older: bool = False) -> argparse.Namespace:
    """The two mirrors and revisions a table is printed from (the command line of both recipe scripts); `older`:
    also take an older pair of revisions of the same mirrors."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n")[0])
    ap.add_argument("inferencemax", help="git directory of the InferenceMAX mirror")
    ap.add_argument("commit", help="its commit (6026f214 for the tables in the repo)")
    ap.add_argument("srt_slurm", help="git directory of the NVIDIA/srt-slurm mirror")
    ap.add_argument("branch", help="its branch or commit (sa-submission-q2-2026)")
    if older:
        ap.add_argument("--older", nargs=2, metavar=("COMMIT", "REVISION"),
                        help="an older InferenceMAX commit and srt-slurm revision for rows the newer pair no longer "
                        "lists (0aae52d4 75f6e32a)")  # fmt: skip
    return ap.parse_args()


def matched_entries(master: dict, framework: str, measured: set[tuple], image_of, read_recipe=None):
    """Every non-MTP search-space entry of the `dsr1-*-<framework>` configs in nvidia-master.yaml that a complete
    measured row matches: (config name, system, precision, image, (isl, osl), matched concurrencies, prefill layout,
    decode layout, CONFIG_FILE). `image_of(image)` turns the config's image tag into the CSV's backend version.
    `read_recipe(CONFIG_FILE)`, where given, returns the recipe's own (benchmark concurrencies, prefill layout, decode
    layout): a row may record those instead of the entry's (H200: the entry lists 64 per decode worker, its recipe
    benchmarks 576 over 9 workers; its context server runs without attention DP)."""
    for name, cfg in master.items():
        if not (name.startswith("dsr1-") and name.endswith(f"-{framework}")):
            continue
        _, precision, gpu, *_ = name.split("-")
        image = image_of(cfg["image"].split(":")[-1])
        # `scenarios: {name: [entry]}`, or before it (2026-02) one list `seq-len-configs: [entry]`
        groups = cfg["scenarios"].values() if "scenarios" in cfg else [cfg.get("seq-len-configs", [])]
        for entries in groups:
            for e in entries:
                if "isl" not in e:
                    continue
                for s in e["search-space"]:
                    if s.get("spec-decoding", "none") != "none":
                        continue  # MTP runs: refused by validate (the CSV records no acceptance)
                    extra = s["prefill"].get("additional-settings", [])
                    files = [x.split("=", 1)[1] for x in extra if "CONFIG_FILE" in x]
                    if not files:
                        continue
                    key = (SYSTEMS[gpu], precision, image, (e["isl"], e["osl"]))
                    concs, layouts = list(s["conc-list"]), [(layout(s["prefill"]), layout(s["decode"]))]
                    if read_recipe is not None:
                        r_concs, r_p, r_d = read_recipe(files[0])
                        concs += [c for c in r_concs if c not in concs]
                        if (r_p, r_d) not in layouts:
                            layouts.append((r_p, r_d))
                    for p, d in layouts:
                        hit = tuple(c for c in concs if (*key, c, p, d) in measured)
                        if hit:
                            yield name, *key, hit, p, d, files[0]


def frontends(recipe: dict) -> int:
    """Dynamo frontends the recipe's job starts (srt-slurm src/srtctl/cli/mixins/frontend_stage.py
    `_compute_frontend_topology`, the same at deb1dfd9 and 75f6e32a): one on a single-node job or with
    `enable_multiple_frontends: false`; otherwise nginx on the head node and a frontend on each other worker node, at
    most `num_additional_frontends` + 1 (FrontendConfig defaults: True, 9). Worker nodes: prefill + decode nodes
    (ResourceConfig.total_nodes; the head is one of them, core/runtime.py Nodes.from_slurm)."""
    res, fe = recipe["resources"], recipe.get("frontend") or {}
    nodes = (res.get("prefill_nodes") or 0) + (res.get("decode_nodes") or 0)
    if nodes <= 1 or not fe.get("enable_multiple_frontends", True):
        return 1
    return min(fe.get("num_additional_frontends", 9) + 1, nodes - 1)


def table_rows(inferencemax: str, commit: str, srt_slurm: str, branch: str, measured: set[tuple]):
    """(rows matched, printed table row) of every entry of one pair of revisions."""
    import yaml

    master = yaml.safe_load(show(inferencemax, commit, ".github/configs/nvidia-master.yaml"))

    @functools.cache  # matching reads a recipe's own keys, printing its context server: one `git show` each
    def recipe(path: str) -> dict:
        return yaml.safe_load(show(srt_slurm, branch, path))

    def own_keys(path: str):
        """The recipe's benchmark concurrencies ("512x1024") and its two pools' layouts."""
        r = recipe(path)
        res, tc = r["resources"], r["backend"]["trtllm_config"]
        # "512x1024", 576 or [4]: every integer it names
        concs = [int(c) for c in re.findall(r"\d+", str(r["benchmark"].get("concurrencies", "")))]

        def pool(cfg: dict, workers: int) -> tuple[int, int, int, int]:
            tp = cfg["tensor_parallel_size"]
            adp = cfg.get("enable_attention_dp", False)
            return (workers, 1 if adp else tp, tp if adp else 1, cfg.get("moe_expert_parallel_size", 1))

        return concs, pool(tc["prefill"], res["prefill_workers"]), pool(tc["decode"], res["decode_workers"])

    for _, system, precision, image, (isl, osl), concs, p, d, path in matched_entries(
        master, "dynamo-trt", measured, lambda tag: tag, own_keys
    ):
        r = recipe(path)
        tc = r["backend"]["trtllm_config"]
        ctx, gen = tc["prefill"], tc["decode"]
        kv = (ctx.get("kv_cache_config") or {}).get("dtype", "auto")
        rows = {(system, precision, image, (isl, osl), c, p, d) for c in concs}
        yield rows, (
            f'    TrtPdRecipe("{system}", "{precision}", "{image}", ({isl}, {osl}), {concs}, '
            f"{p}, {d},\n"
            f'                "{path}",\n'
            f'                {ctx["max_batch_size"]}, {ctx["max_num_tokens"]}, "{kv}", {gen["max_batch_size"]}, '
            f"{frontends(r)}"
        )


def grid(rows: set[tuple]) -> set[tuple]:
    """(system, precision, (isl, osl)) of matched rows: what a grid lists, whatever the concurrency and layout."""
    return {(system, precision, isl_osl) for system, precision, _, isl_osl, *_ in rows}


def main() -> int:
    a = sources(__doc__, older=True)
    measured = measured_keys()
    newer: set[tuple] = set()  # what the newer revisions' grid lists
    for rows, text in table_rows(a.inferencemax, a.commit, a.srt_slurm, a.branch, measured):
        newer |= grid(rows)
        print(text + "),")
    if a.older:
        for rows, text in table_rows(a.inferencemax, a.older[0], a.srt_slurm, a.older[1], measured):
            if not grid(rows) & newer:  # only what the newer grid no longer lists
                print(text + ", source=TRT_PD_SOURCE_OLDER),")
    return 0


if __name__ == "__main__":
    sys.exit(main())
