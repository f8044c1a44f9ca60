"""One measured silicon point -> the twin scenario that runs it the way it was measured, or a refusal.

A measured row is a benchmark client holding `concurrency` requests in flight (closed loop) of
up to ISL input and OSL output tokens against one deployment. The twin runs the same client (see
CLIENT_PROMPTS_PER_SLOT): 10 x concurrency requests from an idle twin, lengths uniform in
[0.8 L, L], every request in the mean; a colocated pool for `agg` rows, and prefill and decode
pools with the row's worker counts and layouts for `disagg` rows.

AIC's layout names, per worker: `tp` = attention TP, `attention_dp` = attention DP, and the MoE
spread over the same GPUs as `moe_tp` x `moe_ep`; `batch` = sequences per attention-DP rank.
A worker is one twin instance of tp x attention_dp dies; the twin's attention TP is `tp`, its EP
degree `moe_ep`. What the CSV does not record is fixed here and listed in docs/accuracy.md:
no MTP, one microbatch stream, no redundant experts. The serving configuration (KV-cache precision,
tokens per step, chunking, request polling) is the row's launch recipe's (silicon_recipes.py).

Every refusal carries a reason from a fixed list, taken from what the twin itself rejects
(scenario and deployment validation, memory fit) or from a probe of what its cost model does,
so that coverage rises by itself as the twin learns a mechanism.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import ValidationError

from cloudmatrix.errors import CloudMatrixError
from cloudmatrix.specs.hardware import BACKENDS
from cloudmatrix.validate.silicon_csv import Measurement, PoolLayout, SiliconRow
from cloudmatrix.validate.silicon_recipes import ServingConfig, serving_config

# AIC system name -> the twin's catalog system file
TWIN_SYSTEMS = {
    "h100_sxm": "hgx-h100",
    "h200_sxm": "hgx-h200",
    "b200_sxm": "hgx-b200",
    "b300_sxm": "hgx-b300",
    "gb200": "gb200-nvl72",
    "gb300": "gb300-nvl72",
}
# DeepSeek-V3, V3.1 and R1 share one architecture; the catalog's deepseek-r1 config stands for all three.
TWIN_MODEL = "deepseek-r1"
TWIN_PRECISIONS = {"fp8": "fp8", "fp4": "fp4", "bf16": "bf16", "int8": "int8"}
# The client that measured the rows (the CSV does not name it; its grid, ISL/OSL 1024/1024, 1024/8192,
# 8192/1024 at c4-c64 and up, and its serving images are InferenceMAX's): SemiAnalysis InferenceMAX's
# `benchmark_serving.py --dataset-name random --random-range-ratio $RANDOM_RANGE_RATIO
# --num-prompts $((CONC * 10)) --max-concurrency $CONC --request-rate inf --ignore-eos`
# (InferenceMAX benchmarks/benchmark_lib.sh `run_benchmark_serving` and benchmarks/*.sh; README's
# client table: RANDOM_RANGE_RATIO 0.8; e.g. github.com/ROCm/InferenceMAX). Its random dataset draws
# each prompt's and output's length as `np.random.randint(int(L * range_ratio), L + 1)`, and its mean
# TTFT and TPOT are over every request of the run, which starts on an idle server (warm-up requests,
# where run, finish before it): the first `concurrency` prompts arrive together.
CLIENT_PROMPTS_PER_SLOT = 10
CLIENT_RANGE_RATIO = 0.8
# The client's warm-up requests (`--num-warmups 2 x CONC`) arrived on 2026-01-21 (InferenceMAX d053ae24, "upstream
# kimbochen/bench_serving, adding warmup", benchmarks/benchmark_lib.sh). An aggregated row measured before then timed
# its first requests on a server that had served nothing: its means carry the stack's first-use costs (compiles,
# autotuning, allocations), which the twin does not model (docs/accuracy.md, "Session 7").
CLIENT_WARMUP_SINCE = "2026-01-21"


def measured_cold(row: SiliconRow) -> bool:
    """An InferenceMAX (aggregated) row measured before its client warmed the server up."""
    return row.mode == "agg" and row.measured_on is not None and row.measured_on < CLIENT_WARMUP_SINCE


# Refusal reasons (the report counts them; docs/accuracy.md explains each).
MODEL = "model not DeepSeek-V3/R1"
SYSTEM_UNMAPPED = "system unknown to the twin"
SYSTEM_MISSING = "system not in the twin's catalog"
NO_CONCURRENCY = "client concurrency not recorded"
INCOMPLETE = "layout incomplete in the CSV (worker counts or batch not recorded)"
MTP_RUN = "MTP run: its draft acceptance on the client's random prompts is not recorded"
INCONSISTENT = "layout does not add up (MoE TP x EP != attention TP x DP)"
PIPELINE = "pipeline parallelism not modelled"
PRECISION = "precision not supported by the twin"
ATTN_TP = "attention TP not modelled (decode step ignores attn_tp)"
ATTN_TP_HEADS = "attention TP degree does not divide the heads"
MOE_TP = "MoE TP not modelled"
TOO_LARGE = "more GPUs than the system has"
NO_FIT = "twin: does not fit in memory"
REJECTED = "twin rejects the deployment"
SIM_FAILED = "simulation failed"
# refusals caused by the measured set itself: no estimator could run these rows
DATA_REASONS = (NO_CONCURRENCY, INCOMPLETE, INCONSISTENT)

# CloudMatrixError message -> reason, first match wins
_CLASSIFY = (
    (re.compile(r"moe_tp", re.I), MOE_TP),
    (re.compile(r"does not fit|holds .* KV tokens|KV for about|HBM|memory", re.I), NO_FIT),
    (re.compile(r"dies \(|but .* has \d+", re.I), TOO_LARGE),
    (re.compile(r"unknown (system|hardware)|no such system", re.I), SYSTEM_MISSING),
    (re.compile(r"precision|does not support", re.I), PRECISION),
    (re.compile(r"attention TP degree \d+ .*must divide .*heads", re.I), ATTN_TP_HEADS),
)


def classify(message: str) -> str:
    """The refusal reason for a CloudMatrixError raised while building or running a row."""
    for pattern, reason in _CLASSIFY:
        if pattern.search(message):
            return reason
    return REJECTED


class Refused(Exception):
    """The twin cannot express this row: `reason` from the list above, `detail` the twin's own words."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Translation:
    scenario: Any  # cloudmatrix.sim.scenario.Scenario
    deployment: str  # the exact twin deployment, in words
    measure_from: int  # first request index the client's mean counts (0: all of them, as the client)
    measure_to: int  # one past its last


# ------------------------------------------------------------------ capability probes
@cache
def decode_reads_attn_tp(system_name: str) -> bool:
    """Whether the cost model's decode step changes when attention is split over TP ranks.

    If it does not, a TP-attention row would be costed as DP attention, silently; such rows are
    refused until the cost model models attention TP (issue 10, item 4)."""
    from cloudmatrix.perf import Deployment, decode_step
    from cloudmatrix.perf.deployment import precisions_for
    from cloudmatrix.specs.hardware import load_system
    from cloudmatrix.specs.model import load_model

    system, model = load_system(system_name), load_model(TWIN_MODEL)
    dies = min(8, system.dies)
    base = Deployment(dies=dies, ep=dies, precision=precisions_for("fp8"))
    t1 = decode_step(model, system, base, 8, 2048, check_memory=False).step_time
    t_tp = decode_step(model, system, base.with_(attn_tp=dies), 8, 2048, check_memory=False).step_time
    return not math.isclose(t1, t_tp, rel_tol=1e-9)


@cache
def catalog_systems() -> frozenset[str]:
    from cloudmatrix.specs.hardware import catalog_names

    return frozenset(catalog_names("system"))


# ------------------------------------------------------------------ translation
def _decode_slots(row: SiliconRow, cfg: ServingConfig, conc: int) -> tuple[int, str] | None:
    """Sequences one decode rank runs at once, exactly (not batch_per_die x TP), and whose figure; None: the row's
    batch. TensorRT-LLM: the launch recipe's max_batch_size where known (silicon_trtllm_recipes.py), else the row's
    batch, as aiconfigurator's generator sets it (generator/rule_plugin/trtllm.rule). No rank ever holds more than
    every client, so a recipe's cap counts only up to the concurrency; `translate` lowers it further to what the KV
    cache holds (_fit_kv_cache). SGLang: the recipe's max-running-requests per DP rank, only where it is below the
    row's batch (silicon_recipes.PdRecipe.decode_slots_per_rank); elsewhere its slots are generous and the row's
    batch stands (docs/accuracy.md, "Session 10")."""
    batch = row.decode.batch or 1  # type: ignore[union-attr]
    if row.backend == "trtllm":
        if cfg.decode_max_batch is not None:
            return min(cfg.decode_max_batch, conc), "the recipe's max_batch_size"
        return batch, "the row's batch"
    if row.backend == "sglang" and cfg.decode_max_batch is not None and cfg.decode_max_batch < batch:
        return cfg.decode_max_batch, "the recipe's max-running-requests over its DP ranks"
    return None


def _fit_kv_cache(data: dict[str, Any]) -> bool:
    """A generation server admits a request only when its whole KV fits (TensorRT-LLM's capacity scheduler), so a
    max_batch_size above what the cache holds never runs: lower the decode pool's sequences per rank to what one
    die's KV holds (sim.serving_sim.decode_sequences_per_die) times the attention-TP group. True when lowered."""
    from cloudmatrix.sim.scenario import Scenario
    from cloudmatrix.sim.serving_sim import decode_sequences_per_die

    dec = data["decode"]
    try:
        fits = decode_sequences_per_die(Scenario.model_validate(data))
    except (ValidationError, CloudMatrixError):
        return False  # the scenario's own check reports it in translate
    if fits < 1 or dec["batch_per_die"] <= fits:
        return False
    dec["batch_per_die"] = fits
    dec["batch_per_rank"] = min(dec["batch_per_rank"], fits * dec["attn_tp"])
    return True


def _pool(
    layout: PoolLayout, role: str, isl: int, cfg: ServingConfig, slots: tuple[int, str] | None = None
) -> tuple[dict[str, Any], str]:
    """A twin [pool] section for one worker shape, and its description; `slots`: a decode worker's exact
    sequences per attention-DP rank, and their source."""
    tp, dp = layout.tp or 1, layout.attention_dp or 1
    dies = tp * dp
    batch = slots[0] if slots is not None else layout.batch or 1
    seqs = batch * dp  # sequences of one worker
    pool: dict[str, Any] = {
        "instances": layout.workers or 1,
        "dies": dies,
        "ep": layout.moe_ep or 1,
        "shared_expert_dies": 0,
        "redundant_experts": 0,
        "attn_tp": tp,
        "microbatches": 1,
    }
    if (layout.moe_tp or 1) > 1:
        pool["moe_tp"] = layout.moe_tp  # refused by the scenario until the twin has MoE TP
    if role in ("decode", "colocated"):
        pool["batch_per_die"] = max(1, math.ceil(seqs / dies))
    if role == "decode" and cfg.recv_interval > 1:
        pool["recv_interval"] = cfg.recv_interval  # the PD recipe's decode server polls every N decode steps
    if role == "prefill":
        # the recipe's context-server step (per attention-DP rank) where known, else the row's batch of prompts
        rank_tokens = cfg.prefill_step_tokens if cfg.prefill_step_tokens is not None else isl * batch
        pool["tokens_per_die"] = max(1, math.ceil(rank_tokens * dp / dies))
    if role == "colocated":
        # the recipe's tokens per step are per attention-DP rank (each rank schedules its own steps)
        pool["tokens_per_die"] = max(1, math.ceil((cfg.step_tokens or 1) * dp / dies))
        pool["chunked_prefill"] = cfg.chunked
        if cfg.recv_interval > 1:
            pool["recv_interval"] = cfg.recv_interval
        if cfg.balance_timeout:
            pool["balance_timeout"] = cfg.balance_timeout
        if cfg.batch_wait_iters:
            pool["batch_wait_iters"] = cfg.batch_wait_iters
            pool["batch_wait_ratio"] = cfg.batch_wait_ratio
    if slots is not None:
        pool["batch_per_rank"] = slots[0]
    return pool, _describe(pool, layout, slots[1] if slots is not None else None)


def _describe(pool: dict[str, Any], layout: PoolLayout, slots_source: str | None = None) -> str:
    """A pool section in words; `slots_source`: where a decode worker's exact sequences per rank come from."""
    tp, dp = pool["attn_tp"], layout.attention_dp or 1
    return (
        f"{pool['instances']} x {pool['dies']} dies (attn TP{tp} x DP{dp}, EP{pool['ep']}"
        + (f", MoE TP{layout.moe_tp}" if (layout.moe_tp or 1) > 1 else "")
        + ")"
        + (f", batch {pool['batch_per_die']}/die" if "batch_per_die" in pool else "")
        + (f", {pool['tokens_per_die']} tokens/die per step" if "tokens_per_die" in pool else "")
        + (f", max batch {pool['batch_per_rank']}/rank ({slots_source})" if slots_source is not None else "")
    )


def client_lengths(length: int) -> dict[str, Any]:
    """The client's length draw for a nominal length L: integers uniform in [int(L x ratio), L]."""
    return {"kind": "uniform", "lo": max(1, int(length * CLIENT_RANGE_RATIO)), "hi": length}


def check_expressible(row: SiliconRow) -> None:
    """Refuse what the CSV cannot tell us or what the twin cannot take, before building anything."""
    if not row.model.lower().count("deepseek"):
        raise Refused(MODEL, row.model)
    # what the CSV does not tell first: these rows are out of reach of any estimator
    if row.concurrency is None:
        raise Refused(NO_CONCURRENCY, row.id)
    if not row.complete:
        total = "; its series records a deployment's GPU total as TP (silicon_csv.unmask_gpu_totals)"
        raise Refused(INCOMPLETE, row.describe_layout() + (total if row.gpu_total else ""))
    if not row.consistent:
        raise Refused(INCONSISTENT, row.describe_layout())
    if row.mtp_run:
        # tokens per step = 1 + the accepted drafts; the twin takes an acceptance, the file does not give one
        raise Refused(MTP_RUN, f"{row.backend} {row.backend_version or row.source}")
    twin = TWIN_SYSTEMS.get(row.system)
    if twin is None:
        raise Refused(SYSTEM_UNMAPPED, row.system)
    if twin not in catalog_systems():
        raise Refused(SYSTEM_MISSING, f"{row.system} -> {twin}")
    if any((p.pp or 1) > 1 for p in row.pools):
        raise Refused(PIPELINE, row.describe_layout())
    if row.precision not in TWIN_PRECISIONS:
        raise Refused(PRECISION, row.precision)
    decode_pools = (row.agg,) if row.mode == "agg" else (row.decode,)
    if any((p.tp or 1) > 1 for p in decode_pools if p is not None) and not decode_reads_attn_tp(twin):
        raise Refused(ATTN_TP, row.describe_layout())


def translate(m: Measurement) -> Translation:
    """The closed-loop scenario of a measured point; raises Refused with a reason."""
    from cloudmatrix.sim.scenario import Scenario

    row = m.row
    check_expressible(row)
    cfg = serving_config(row)
    twin = TWIN_SYSTEMS[row.system]
    conc = row.concurrency or 1
    data: dict[str, Any] = {
        "name": row.id,
        "description": f"{row.system} {row.backend} {row.mode} {row.isl}/{row.osl} c{conc}",
        "system": twin,
        "model": TWIN_MODEL,
        "experts": {"popularity": "uniform", "placement": "none"},
        "precision": {"weights": TWIN_PRECISIONS[row.precision], "kv_cache": cfg.kv_cache},
        "workload": {
            "kind": "closed",
            "concurrency": conc,
            "num_requests": CLIENT_PROMPTS_PER_SLOT * conc,
            "input_len": client_lengths(row.isl),
            "output_len": client_lengths(row.osl),
        },
    }
    if row.mode == "agg":
        data["mode"] = "colocated"
        data["colocated"], words = _pool(row.agg, "colocated", row.isl, cfg)  # type: ignore[arg-type]
        words = "colocated " + words
    else:
        data["mode"] = "disaggregated"
        data["prefill"], pw = _pool(row.prefill, "prefill", row.isl, cfg)  # type: ignore[arg-type]
        slots = _decode_slots(row, cfg, conc)
        data["decode"], dw = _pool(row.decode, "decode", row.isl, cfg, slots)  # type: ignore[arg-type]
        if cfg.frontends > 1:  # the recipe's job spreads requests over several routers (serving/router.py)
            data["frontend"] = {"routers": cfg.frontends}
    if row.backend in BACKENDS:  # cost the pools with the row's serving stack's kernel curves
        for k in ("colocated", "prefill", "decode"):
            if k in data:
                data[k]["backend"] = row.backend
    total = sum(p["instances"] * p["dies"] for k, p in data.items() if k in ("colocated", "prefill", "decode"))
    if twin.startswith("hgx-"):
        data["nodes"] = max(1, math.ceil(total / 8))  # HGX clusters grow by 8-GPU nodes
    if row.mode != "agg":
        recipe_cap = cfg.decode_max_batch
        # a recipe cap above the load the row ran: the KV cache may bind first. At or below it, a cap the twin
        # says does not fit is the twin's memory model at fault, and the row is refused as such below
        # (an SGLang cap counts only below the row's batch, so slots is None whenever its cap is above it)
        above = recipe_cap is not None and recipe_cap > (row.decode.batch or 1)  # type: ignore[union-attr]
        if slots is not None and above and _fit_kv_cache(data):
            dw = _describe(data["decode"], row.decode, f"its KV cache's limit; {slots[1]}")  # type: ignore[index,arg-type]
        words = f"prefill {pw} + decode {dw}"
    try:
        sc = Scenario.model_validate(data)
        sc.check()
    except ValidationError as e:
        msg = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors())
        raise Refused(classify(msg), msg) from None
    except CloudMatrixError as e:
        raise Refused(classify(str(e)), str(e)) from None
    n = CLIENT_PROMPTS_PER_SLOT * conc
    words += (
        f"; {row.precision} weights, {cfg.describe()}, no MTP; closed loop {conc} clients, {n} requests of "
        f"{row.isl}/{row.osl} tokens (x U[{CLIENT_RANGE_RATIO}, 1]) from an idle twin, all counted"
    )
    return Translation(sc, words, 0, n)
