"""Ascend 910C GEMM parameters from the paper's kernel table (Zuo et al., arXiv 2506.12708 v2 §5):

INT8 GEMM (INT8 in, BF16 out) reaches 77.4-82.7% of peak over four M x N x K shapes
(cloudmatrix.perf.calibration.INT8_GEMM_SHAPES). The paper gives the band, not which shape sits where, and
its shapes vary M, N and K together, so two numbers cannot identify a three-term curve. We fit `peak` and
`half_k` so that the twin's lowest and highest efficiency over the four shapes are the band's ends (the model
decides which shape is which), with `half_rows` TRANSFERRED from the per-tensor-scaled 8-bit GEMM fit of an
H100 (the closest NVIDIA analogue of the 910C's per-channel W8A8 kernel; tile quantisation in M is the same
mechanism on any tiled matrix engine). `half_n` is not transferred: with the H100's n-term the band needs a
peak above 100% (run.py prints that check), so that term is specific to the H100's 132-SM wave shape.
No small-M figure is published for the 910C.
"""

from __future__ import annotations

import math

from cloudmatrix.perf.calibration import INT8_GEMM_SHAPES, INT8_GEMM_UTILISATION


def shape_factor(curve: dict[str, float], m: float, n: float, k: float) -> float:
    return m / (m + curve["half_rows"]) * n / (n + curve["half_n"]) * k / (k + curve["half_k"])


def band(peak: float, curve: dict[str, float]) -> tuple[float, float]:
    f = [peak * shape_factor(curve, m, n, k) for m, n, k in INT8_GEMM_SHAPES]
    return min(f), max(f)


def fit_gemm(half_rows: float) -> dict[str, float]:
    """peak and half_k for a given (transferred) half_rows; half_n = 0."""
    from scipy.optimize import least_squares

    lo, hi = INT8_GEMM_UTILISATION

    def curve(x):
        return {"half_rows": half_rows, "half_n": 0.0, "half_k": math.exp(x[1])}

    def residual(x):
        a, b = band(1 / (1 + math.exp(-x[0])), curve(x))
        return [a / lo - 1, b / hi - 1]

    x = least_squares(residual, [1.5, math.log(300.0)]).x
    peak = 1 / (1 + math.exp(-x[0]))
    a, b = band(peak, curve(x))
    return {"peak": peak, "min": a, "max": b, **curve(x)}


def full_transfer_peak(curve: dict[str, float]) -> float:
    """The peak the band would need with the whole transferred curve (half_rows, half_n, half_k): the check that
    rules the n-term out when it exceeds 1."""
    lo, hi = INT8_GEMM_UTILISATION
    f = [shape_factor(curve, m, n, k) for m, n, k in INT8_GEMM_SHAPES]
    return (lo / min(f) + hi / max(f)) / 2


# ---------------------------------------------------------------- fixed per-kernel latency, from layer times
#
# [paper] MTP ablation (Zuo et al., arXiv 2506.12708, ablation section; read via a public reading note that
# quotes it): one decode layer takes 874 us without MTP and 1,260 us with one MTP token (+44%), on the paper's
# decode instance (EP320, 96 sequences per NPU = 48 per die, KV ~4K, INT8). These are layer-level figures, which
# the issue allows to calibrate; the end-to-end tokens/s, TPOT and 15 ms-cap figures stay validation only.
# ASSUMPTION: the ablation ran the production decode configuration, two microbatches (paper §5.4's setup);
# `--microbatches 1` refits under the other reading and `main` prints both.
LAYER_FIGURES = {0: 874e-6, 1: 1260e-6}  # MTP depth -> seconds per decoder layer
LAYER_BATCH_PER_DIE = 48
LAYER_KV_LEN = 4096
LAYER_SCENARIO = "paper-decode"  # EP320: 256 routed + 32 shared-expert + 32 redundant dies, INT8, uniform + EPLB
# The decode MLA kernel's KV loads and cube work do not overlap on the 910C (a structural assumption, no
# parameter; docs/calibration.md "Ascend 910C layer times" gives the evidence): the fit is made with it.
DECODE_ATTENTION_SERIAL = True
# prefill attention has its own launch latency (fit_fa), so a decode refit leaves it alone
LATENCY_KEYS = ("kernel_latency", "attention_latency", "vector_latency")


def chip_with(updates: dict[str, float]):
    """The 910C system with these [efficiency] keys replaced; a `kernel_latency` also sets the latencies that
    default to it in the TOML (attention, vector), as loading the written file would."""
    from cloudmatrix.specs.hardware import System, load_system

    base = load_system("cloudmatrix384")
    upd = dict(updates)
    if "kernel_latency" in upd:
        upd.update({k: upd["kernel_latency"] for k in LATENCY_KEYS})
    eff = base.chip.efficiency.model_copy(update=upd)
    return System(base.spec, base.chip.model_copy(update={"efficiency": eff}), base.source)


def decode_layer_time(system, mtp: int, microbatches: int = 2, batch: float = LAYER_BATCH_PER_DIE) -> float:
    """Seconds of one MoE decoder layer in the twin's own decode step (perf.decode.decode_step, the deployment
    from the paper scenario through perf.deployment.build_deployment): the step of the model with one more MoE
    layer minus the step of the model, so overlap, fill and every op are the step model's."""
    from dataclasses import replace

    from cloudmatrix.perf.decode import decode_step
    from cloudmatrix.sim.costs import PoolCosts
    from cloudmatrix.sim.scenario import load_scenario

    sc = load_scenario(LAYER_SCENARIO)
    _, model = sc.check()
    pool = sc.decode.model_copy(update={"microbatches": microbatches})
    dep = sc.deployment(pool, model).with_(mtp_depth=mtp, mtp_acceptance=0.7 if mtp else 0.0)
    # the placement's expert imbalance at the step's tokens, as validate/paper.py takes it
    dep = dep.with_(imbalance=PoolCosts(model, system, dep, sc.experts).imbalance(batch * (1 + mtp)))
    one_more = replace(model, layers=model.layers + 1)
    t0 = decode_step(model, system, dep, batch, LAYER_KV_LEN, check_memory=False).step_time
    t1 = decode_step(one_more, system, dep, batch, LAYER_KV_LEN, check_memory=False).step_time
    return t1 - t0


def fit_kernel_latency(
    gemm: dict[str, float] | None = None, microbatches: int = 2, figures: dict[int, float] | None = None
) -> dict:
    """kernel_latency (s) such that the twin's decode layer matches LAYER_FIGURES, least squares on the relative
    errors of both figures (one parameter, two figures: one degree of freedom left as the check). `gemm`: the
    GEMM keys just fitted (fit_gemm) when they are not yet in the TOML; `figures`: other targets (tests)."""
    figures = figures or LAYER_FIGURES
    from scipy.optimize import least_squares

    base = {"attention_decode_serial": DECODE_ATTENTION_SERIAL}
    base |= {} if gemm is None else {k: gemm[v] for k, v in _GEMM_KEYS.items()}

    def times(lat: float) -> dict[int, float]:
        s = chip_with({**base, "kernel_latency": lat})
        return {m: decode_layer_time(s, m, microbatches) for m in figures}

    def residual(x):
        t = times(x[0] * 1e-6)
        return [t[m] / figures[m] - 1 for m in figures]

    x = least_squares(residual, [10.0], bounds=([0.0], [200.0]), x_scale=[10.0]).x
    lat = float(x[0]) * 1e-6
    t, t0 = times(lat), times(0.0)
    return {
        "kernel_latency": lat,
        "microbatches": microbatches,
        "model": t,
        "model_without": t0,
        "residual": {m: t[m] / figures[m] - 1 for m in figures},
    }


# Prefill attention: CANN's fused FlashAttention measured on the 910C's own die. hw-native-sys/pto-isa (commit
# 3186c381, 2026-08-21) kernels/python/flash_atten/README.md, "Performance": torch_npu.npu_fused_infer_attention_score
# on an "Ascend A3-class" target (dav-2201, 24 cube cores: the Atlas A3 = 910C die), one head, head 128, FP16
# (run.py), non-causal (next_tokens=65535), S0 = S1: (sequence length, torch_npu time in us). Event timing up to 8K,
# host-synchronised from 16K (the README's "Timing" column).
FA_A3_ROWS = ((1024, 54.0), (2048, 73.0), (4096, 139.0), (8192, 291.0), (16384, 985.0), (32768, 3184.0),
              (65536, 12158.0), (131072, 48135.0))  # fmt: skip
# The same operator family on an Ascend 910B2 (same dav-c220 cores; TRANSFERRED, cross-check only):
# kernels/manual/common/flash_atten/README.md "910B2 Multi-Core Comparison", torch_npu column, head 128, FP16.
FA_910B2_ROWS = ((1024, 58.461), (2048, 70.801), (4096, 118.302), (8192, 353.147), (16384, 1118.462),
                 (32768, 3646.173))  # fmt: skip
FA_HEAD = 128
FA_BLOCK_ROWS = 128  # query rows per FA work unit (the PTO kernels' CUBE_S0; the 128-row fit is the best of 64-512)
FA_CORES = 24


def fa_time(latency: float, block: float, per_key: float, s: float, rows: int = FA_BLOCK_ROWS) -> float:
    """One head of S x S attention: the S / rows query blocks run in waves over the 24 cube cores; a block costs
    `block` (its fixed prologue / epilogue) + `per_key` per key; `latency` once per launch (seconds)."""
    waves = math.ceil(s / rows / FA_CORES)
    return latency + waves * (block + s * per_key * rows / FA_BLOCK_ROWS)


def _fa_columns(s: float, rows: int = FA_BLOCK_ROWS) -> tuple[float, float, float]:
    """fa_time is linear in (latency, block, per_key): its coefficients at sequence length s."""
    waves = math.ceil(s / rows / FA_CORES)
    return 1.0, float(waves), waves * s * rows / FA_BLOCK_ROWS


def fit_fa(rows_table=FA_A3_ROWS, rows: int = FA_BLOCK_ROWS, block: float | None = None) -> dict:
    """latency, block cost and per-key cost of the fused FA kernel, least squares on the relative errors of every
    row of the table (linear: numpy only, no bound is active on the A3 rows; a negative block cost is refitted
    at 0, as a bounded fit would). `block` fixes the block cost (seconds; sensitivity checks). The twin's form
    (perf/kernels.py mla_prefill): efficiency = attention_prefill * c / (c + half_context) at c keys per query,
    with attention_prefill the per-key rate over the peak and half_context = block / per_key (a block's fixed
    cost in keys): exact for this model, causal or not."""
    import numpy as np

    from cloudmatrix.specs.hardware import load_system

    s = [r[0] for r in rows_table]
    t = np.array([r[1] * 1e-6 for r in rows_table])
    a = np.array([_fa_columns(si, rows) for si in s]) / t[:, None]
    target = np.ones(len(s))
    if block is not None:
        target, a = target - a[:, 1] * block, a[:, [0, 2]]
    x = np.linalg.lstsq(a, target, rcond=None)[0]
    if block is None and x[1] < 0:
        block, x = 0.0, np.linalg.lstsq(a[:, [0, 2]], target, rcond=None)[0]
    if block is not None:
        x = np.array([x[0], block, x[1]])
    lat, block, per_key = (float(v) for v in x)
    rate = 4 * FA_BLOCK_ROWS * FA_HEAD / per_key * FA_CORES  # QK^T + PV: 4 x rows x head ops per key per block
    peak = load_system("cloudmatrix384").chip.peak("bf16")
    fun = [fa_time(lat, block, per_key, si, rows) / ti - 1 for si, ti in zip(s, t, strict=True)]
    return {
        "latency": lat,
        "block": block,
        "per_key": per_key,
        "rate": rate,
        "attention_prefill": rate / peak,
        "half_context": block / per_key,
        "residual": dict(zip(s, fun, strict=True)),
        "rms": math.sqrt(sum(v * v for v in fun) / len(fun)),
    }


def fit_prefill_attention() -> float:
    """attention_prefill: the A3 FA kernel's per-key rate (all cores busy, block costs apart) over the twin's BF16
    peak; its block cost is attention_prefill_half_context (fit_fa)."""
    return fit_fa()["attention_prefill"]


def prefill_attention_lines() -> list[str]:
    """The 910C [efficiency] lines for the prefill attention core, with their provenance."""
    f, b2 = fit_fa(), fit_fa(FA_910B2_ROWS)
    worst = max(abs(v) for v in f["residual"].values())
    worst_b2 = max(abs(v) for v in b2["residual"].values())
    ctx = (4096 + 1) / 2
    at4k = f["attention_prefill"] * ctx / (ctx + f["half_context"])
    return [
        "# attention_prefill (benchmarks/calibrate/ascend_910c.py fit_fa): prefill MLA core (128-head MHA, causal).",
        "#   CANN's fused FA (torch_npu.npu_fused_infer_attention_score) measured on the A3 (910C) die itself:",
        "#   hw-native-sys/pto-isa kernels/python/flash_atten/README.md (3186c381), one head, head 128, FP16,",
        f"#   S = 1K-128K. Fit (8 rows, max residual {worst:.1%}): {f['latency'] * 1e6:.1f} us per launch + per "
        f"128-row query block {f['block'] * 1e6:.1f} us",
        f"#   + {f['per_key'] * 1e9:.2f} ns per key, i.e. {f['rate'] / 1e12:.0f} TFLOPS once the blocks are long "
        f"({f['attention_prefill']:.1%} of 376) and half",
        f"#   that at {f['half_context']:,.0f} keys per query (a 4K causal prompt: {at4k:.1%} of 376).",
        f"#   Cross-check: the 910B2 torch_npu rows (common/flash_atten) fit {b2['rate'] / 1e12:.0f} TFLOPS with a "
        f"{b2['block'] * 1e6:.0f} us block,",
        f"#   residuals up to {worst_b2:.0%}: too noisy to resolve a block cost.",
        "#   Not in the figure: head dims 192/128 (the block cost is taken to scale with the per-key cost), causal",
        "#   diagonal tiles and masks, consecutive blocks of many heads overlapping their prologues.",
        f"attention_prefill = {f['attention_prefill']:.3f}",
        f"attention_prefill_half_context = {f['half_context']:.1f}",
        f'attention_prefill_latency = "{f["latency"] * 1e6:.2f} us"',
    ]


def _put_lines(path, lines: list[str], block: str, anchor: str, before: bool, what: str) -> None:
    """Put a generated block of TOML lines into the 910C's [efficiency] section: replace the block (regex `block`)
    where it is, else insert it before / after the first match of `anchor`."""
    import re

    text = path.read_text()
    new = "\n".join(lines) + "\n"
    old = re.compile(block, re.M | re.S)
    if old.search(text):
        text = old.sub(lambda _: new, text, count=1)
    else:
        at = re.search(anchor, text, re.M)
        if at is None:
            raise ValueError(f"{path}: no place for the {what} lines")
        cut = at.start() if before else at.end()
        text = text[:cut] + new + text[cut:]
    path.write_text(text)


def write_prefill_attention(path) -> None:
    """`prefill_attention_lines()` in place, else before the decode-attention / latency lines."""
    _put_lines(
        path,
        prefill_attention_lines(),
        r"^# attention_prefill \(.*?^attention_prefill = [^\n]*\n(?:attention_prefill_half_context = [^\n]*\n)?"
        r"(?:attention_prefill_latency = [^\n]*\n)?",
        r"^# (?:No per-kernel latency figure|attention_decode_serial: )",
        before=True,
        what="attention_prefill",
    )


# ---------------------------------------------------------------- pto-isa A3 kernel figures the twin is checked on
#
# hw-native-sys/pto-isa at 3186c381. Each row: what was measured on the A3 (910C die: 24 cube + 48 vector cores),
# and the twin's own cost of the same work. Nothing below is fitted; `main` prints the ratios.
#
# kernels/manual/a2a3/gemm_performance/README.md "Measured Performance": dense FP16 GEMM (FP32 out), m = k = n,
# 24 cores, PTO's manual kernel: (m, ms).
A3_FP16_GEMM = ((1536, 0.0388), (3072, 0.2067), (6144, 1.5060), (7680, 3.1680))
# kernels/manual/a2a3/dispatch_mega_combine: the fused MoE (dispatch + INT8 GMM1 + SwiGLU + INT8 GMM2 + combine +
# unpermute) at DeepSeek's expert shapes: K = 7,168, N = 4,096 (gate + up), topK 8, 16 experts per rank, EP16
# (256 experts), M = 2,048 tokens per rank, routes round-robin: 1,024 rows per expert. The per-stage windows (us)
# are printed in overview.md's timeline (docs/figures/megamoe/2048_16rank_overlap_pipeline.png, the baseline
# kernel: one expert at a time on all 24 AICs).
MEGAMOE = {
    "tokens": 2048, "top_k": 8, "experts": 16, "hidden": 7168, "inter": 2048,
    "gmm1": (475.0, 2047.0, 15),  # E1..E15 back to back (E0 waits for the first dispatch)
    "gmm2_alone": (2140.0, 2197.0, 1),  # E0, before the combine starts at 2232
    "gmm2_with_combine": (2292.0, 3655.0, 14),  # E2..E15, the 8-AIV combine running beside them
    "dispatch": (256.0, 1258.0, 16),  # D0..D15, 16 AIVs pulling INT8 rows (7,168 B + 32 B scale) from 16 ranks
    "combine": (2232.0, 3987.0, 16),  # C0..C15, 8 AIVs writing BF16 rows back to their source ranks
    "unpermute": (3987.0, 4403.0, 1),  # 48 AIVs: top-k weighted sum of the returned rows, after the last combine
}  # fmt: skip
# the baseline timeline's SwiGLU (+ dynamic INT8 quant) windows on 16 AIVs: S0 = experts 0-13, S1 = 14-15 (us);
# S0 runs beside GMM1's last experts until 2,047
MEGAMOE_SWIGLU_US = ((1836.0, 2138.0), (2140.0, 2214.0))
MEGAMOE_SWIGLU_AIVS = 16
# overview_v1.md, the v1 schedule's timeline (docs/figures/megamoe/v1_2048_overlap_pipeline.png: EP8, rank 0, same
# shapes, 1,024 rows per expert): the AICs are busy from GMM1 E0's start to GMM2 E15's end, GMM1 on 16 and GMM2 on 8
# of them until GMM1 is done, every AIV transfer beside them ("Comm hidden behind compute: 77.4%")
MEGAMOE_V1_AIC_US = (303.0, 3172.0)
# The same v1 timeline, per-expert windows (us) printed in it: GMM2 on the 8 AICs of physical cores 16-23, E0-E2 before
# the combine starts (C0 at 1,147), E3-E11 beside it (the combine on the AIVs of those same cores), before the 24-AIC
# join; GMM1 on the 16 AICs of cores 0-15 (E3-E15); SwiGLU (16 AIVs of cores 0-15) and the combine, whole lanes
MEGAMOE_V1 = {
    "gmm2_alone": (635.0, 1143.0, 3), "gmm2_with_combine": (1180.0, 2811.0, 9), "gmm1": (796.0, 2877.0, 13),
    "swiglu": (462.0, 2947.0, 16), "combine": (1147.0, 3495.0, 16),
}  # fmt: skip
# overview_v1.md "A3 EP16": the same case end to end, kernel time (us) of the baseline and of the v1 schedule
MEGAMOE_TOTAL_US = {"baseline": 4380.82, "v1": 3714.16}


def _window(key: str) -> float:
    a, b, n = MEGAMOE[key]
    return (b - a) * 1e-6 / n


# overview_v1.md's v1 timeline: "Unpermute work 3195-3709" (us), the same 2,048 tokens x top-8 rows, partly beside the
# last combines (C14, C15 end at 3,495): a cross-check, not clean
MEGAMOE_V1_UNPERMUTE_US = (3195.0, 3709.0)


def unpermute_bytes() -> float:
    """HBM bytes of MegaMoE's unpermute, as the twin's combine_sum counts them (perf/moe.py): the top-k BF16 expert
    rows of every token read, the token written (the top-k weights and row indices are ~0.1% more, not counted)."""
    mm = MEGAMOE
    return (mm["tokens"] * mm["top_k"] + mm["tokens"]) * mm["hidden"] * 2.0


def swiglu_rate() -> tuple[float, float]:
    """(bytes, bytes/s on 16 AIVs) of the baseline timeline's SwiGLU + dynamic quant, S0 start to S1 end."""
    mm = MEGAMOE
    (a0, _), (_, b1) = MEGAMOE_SWIGLU_US
    nbytes = mm["tokens"] * mm["top_k"] * (2 * mm["inter"] * 2 + mm["inter"])  # read FP16 gate + up, write INT8
    return nbytes, nbytes / ((b1 - a0) * 1e-6)


def fit_vector_reduce(system=None) -> dict:
    """vector_reduce: the HBM fraction of the top-k gather-reduce, from MegaMoE's baseline unpermute on the A3 die
    (all 48 AIVs, after the last combine and the last GMM2: nothing else runs beside it). One kernel inside a fused
    kernel: no launch in the window, so no latency is taken off it."""
    from cloudmatrix.specs.hardware import load_system

    bw = (system or load_system("cloudmatrix384")).chip.die.hbm_bandwidth
    rate = unpermute_bytes() / _window("unpermute")
    a, b = MEGAMOE_V1_UNPERMUTE_US
    v1 = unpermute_bytes() / ((b - a) * 1e-6)
    return {"rate": rate, "vector_reduce": rate / bw, "v1_rate": v1, "v1_fraction": v1 / bw, "bytes": unpermute_bytes()}


def vector_reduce_lines() -> list[str]:
    """The 910C [efficiency] line for the gather-reduce vector kernels (combine_sum), with its provenance."""
    from cloudmatrix.specs.hardware import load_system

    f = fit_vector_reduce()
    a, b, _ = MEGAMOE["unpermute"]
    va, vb = MEGAMOE_V1_UNPERMUTE_US
    sw16 = swiglu_rate()[1]
    bw = load_system("cloudmatrix384").chip.die.hbm_bandwidth
    return [
        "# vector_reduce (benchmarks/calibrate/ascend_910c.py fit_vector_reduce): the combine sum (each token's top-k",
        "#   expert rows gathered, weighted, summed). Measured on the A3 (910C) die: hw-native-sys/pto-isa (3186c381)",
        "#   kernels/manual/a2a3/dispatch_mega_combine, baseline timeline (docs/figures/megamoe/",
        "#   2048_16rank_overlap_pipeline.png), unpermute of 2,048 tokens x top-8 BF16 rows of 7,168 on all 48 AIVs,",
        f"#   {a:,.0f}-{b:,.0f} us with nothing beside it: {f['bytes'] / 1e6:.0f} MB = {f['rate'] / 1e12:.3f} TB/s "
        f"({f['vector_reduce']:.1%} of HBM). Cross-check: the v1",
        f"#   schedule's unpermute, {va:,.0f}-{vb:,.0f} us partly beside the last combines: {f['v1_rate'] / 1e12:.3f} "
        f"TB/s ({f['v1_fraction']:.1%}).",
        f"#   SwiGLU + quantisation there: {sw16 / 1e12:.2f} TB/s on 16 of 48 AIVs, partly beside GMM1 "
        f"({sw16 * 3 / 1e12:.2f} TB/s scaled to 48,",
        f"#   {sw16 * 3 / bw:.1%} of HBM): consistent with `vector`, which the element-wise kernels keep.",
        f"vector_reduce = {f['vector_reduce']:.3f}",
    ]


def write_vector_reduce(path) -> None:
    """`vector_reduce_lines()` in place, else after the `memory` line."""
    _put_lines(
        path,
        vector_reduce_lines(),
        r"^# vector_reduce \(.*?^vector_reduce = [^\n]*\n",
        r"^memory = [^\n]*\n",
        before=False,
        what="vector_reduce",
    )


def pto_checks(system=None) -> list[tuple[str, float, float, str]]:
    """(what, measured, twin, unit) for every A3 kernel figure above, the twin's side from its own kernel costs."""
    from cloudmatrix.perf.kernels import gemm, grouped_gemm, vector_op
    from cloudmatrix.specs.hardware import load_system

    chip = (system or load_system("cloudmatrix384")).chip
    rows = []
    for m, ms in A3_FP16_GEMM:
        f = 2.0 * m**3
        rows.append((f"FP16 GEMM {m}^3", f / (ms * 1e-3) / 1e12, f / gemm(m, m, m, "fp16", chip).time / 1e12, "TFLOPS"))
    mm = MEGAMOE
    per_expert = mm["tokens"] * mm["top_k"] / mm["experts"]
    h, i = mm["hidden"], mm["inter"]
    for key, (k, n) in (("gmm1", (h, 2 * i)), ("gmm2_alone", (i, h)), ("gmm2_with_combine", (i, h))):
        f = 2.0 * per_expert * k * n
        twin = grouped_gemm(per_expert, 1, ((k, n),), "int8", chip).time
        rows.append((f"INT8 {key} {per_expert:.0f} x {k} -> {n}", f / _window(key) / 1e12, f / twin / 1e12, "TOPS"))
    copies = mm["tokens"] * mm["top_k"]
    both = 2.0 * copies * h * 3 * i
    a, b = MEGAMOE_V1_AIC_US
    twin = sum(
        grouped_gemm(copies, mm["experts"], (shape,), "int8", chip).time for shape in ((h, 2 * i), (i, h))
    )  # the twin's routed experts: GMM1 + GMM2 of all 16 experts
    rows.append(("INT8 GMM1 + GMM2, v1 AIC busy window", both / ((b - a) * 1e-6) / 1e12, both / twin / 1e12, "TOPS"))
    disp = per_expert * (h + 32)
    rows.append(("dispatch pull per die (UB)", disp / _window("dispatch") / 1e9, float("nan"), "GB/s"))
    rows.append(("combine write per die (UB)", per_expert * h * 2 / _window("combine") / 1e9, float("nan"), "GB/s"))
    # the twin's combine_sum (perf/moe.py): read the top-k BF16 copies, write the token, at `vector_reduce`; this
    # row sets that fraction (fit_vector_reduce), so it differs from 1 by the kernel latency only
    total = unpermute_bytes()
    eff = chip.efficiency
    twin = eff.vector_latency + total / (chip.die.hbm_bandwidth * eff.vector_reduce)
    rows.append(
        (
            "unpermute = combine_sum (sets vector_reduce)",
            total / _window("unpermute") / 1e12,
            total / twin / 1e12,
            "TB/s",
        )
    )
    # the element-wise kernels at `vector`: SwiGLU + quant (read FP16 2 x 2,048, write INT8 2,048 per row), S0 and
    # S1 of the baseline timeline on 16 AIVs, scaled to the 48 the twin's kernels use (if it scaled linearly)
    sw, rate16 = swiglu_rate()
    sw_twin = vector_op(mm["tokens"] * mm["top_k"] * i, 2 * 2 + 1, chip).time
    rate48 = rate16 * 48 / MEGAMOE_SWIGLU_AIVS
    rows.append(("SwiGLU + quant, x 48 / 16 AIVs (at `vector`)", rate48 / 1e12, sw / sw_twin / 1e12, "TB/s"))
    return rows


def _v1_window(key: str) -> float:
    a, b, n = MEGAMOE_V1[key]
    return (b - a) * 1e-6 / n


def megamoe_bytes() -> dict[str, float]:
    """Compulsory HBM bytes per expert (1,024 rows) of each MegaMoE stage on one die: GEMM weights + input + output
    (GMM1 writes FP16 for SwiGLU, GMM2 BF16); SwiGLU reads FP16 gate + up, writes INT8; a transfer touches this die's
    HBM twice in a symmetric EP group: its own side (dispatch: write the pulled rows; combine: read the rows it
    sends) and the peers' side (their pulls of our rows, their rows landing here)."""
    mm = MEGAMOE
    rows, h, i = mm["tokens"] * mm["top_k"] / mm["experts"], mm["hidden"], mm["inter"]
    return {
        "gmm1": h * 2 * i + rows * h + rows * 2 * i * 2,
        "gmm2": i * h + rows * i + rows * h * 2,
        "swiglu": rows * (2 * i * 2 + i),
        "dispatch": 2 * rows * (h + 32),
        "combine": 2 * rows * h * 2,
    }


def contention_evidence() -> dict:
    """AIC/AIV contention on the A3 die, measured in MegaMoE's two timelines: each GEMM's rate with an AIV transfer
    beside it over its rate without, and the die's compulsory HBM traffic in that window (TB/s). Then the one
    mechanism the twin could carry, a die-level bandwidth the GEMM and the transfer share: the bandwidth case 1
    implies (the GEMM getting what the transfer leaves) and what it predicts for cases 2 and 3."""
    b = megamoe_bytes()
    base_gmm2 = _window("gmm2_alone") / _window("gmm2_with_combine")
    comb = b["combine"] / _window("combine")
    traffic1 = b["gmm2"] / _window("gmm2_with_combine") + comb
    # GMM1 E1-E7 run while the dispatch does (475-1210), E9-E15 after it ended at 1,258 (1310-2047)
    gmm1_with, gmm1_after = (1210.0 - 475.0) / 7, (2047.0 - 1310.0) / 7
    disp = b["dispatch"] / _window("dispatch")
    traffic3 = b["gmm1"] / (gmm1_with * 1e-6) + disp
    v1 = _v1_window("gmm2_alone") / _v1_window("gmm2_with_combine")
    traffic2 = sum(b[k.split("_")[0]] / _v1_window(k) for k in ("gmm2_with_combine", "gmm1", "swiglu", "combine"))
    shared = traffic1  # the GEMM slowed to exactly what the transfer left it
    pred3 = min(1.0, (shared - disp) / (b["gmm1"] / (gmm1_after * 1e-6)))
    v1_others = traffic2 - b["gmm2"] / _v1_window("gmm2_with_combine")
    pred2 = max(0.0, (shared - v1_others) / (b["gmm2"] / _v1_window("gmm2_alone")))
    return {
        "cases": [
            ("baseline EP16: GMM2 on 24 AICs, 8-AIV combine beside it", base_gmm2, traffic1),
            ("v1 EP8: GMM2 on 8 AICs, the combine on the same cores' AIVs", v1, traffic2),
            ("baseline EP16: GMM1 on 24 AICs, 16-AIV dispatch beside it", gmm1_after / gmm1_with, traffic3),
        ],
        "shared_bandwidth": shared,
        "predicted": {2: pred2, 3: pred3},
    }


_GEMM_KEYS = {"gemm": "peak", "gemm_half_rows": "half_rows", "gemm_half_n": "half_n", "gemm_half_k": "half_k"}


def latency_lines(fit: dict) -> list[str]:
    """The 910C [efficiency] lines for the fixed per-kernel latency, with their provenance."""
    r, t = fit["residual"], fit["model"]
    worst = max(abs(v) for v in r.values())
    return [
        "# attention_decode_serial: ASSUMPTION (structural, no parameter): the decode MLA kernel loads each KV tile,",
        "#   then computes on it (cube and vector cores are separate on the 910C; the tile goes through both), so",
        "#   its time is compute + memory. Without it the layer-time gap below would have to be all fixed cost,",
        "#   which leaves the twin ~33% slow at 4 seqs/die (docs/calibration.md, 'Ascend 910C layer times').",
        f"attention_decode_serial = {'true' if DECODE_ATTENTION_SERIAL else 'false'}",
        "# kernel_latency (benchmarks/calibrate/ascend_910c.py fit_kernel_latency): fixed cost per kernel (launch,",
        "#   prologue, tail; attention and vector kernels default to it), fitted so that one",
        "#   MoE decode layer of the twin's own step (EP320, 48 seqs/die, KV 4K, INT8, two microbatches) matches",
        "#   [paper]'s MTP ablation, 874 us (no MTP) and 1,260 us (one MTP token; ablation section, read via a",
        f"#   public reading note): model {t[0] * 1e6:,.0f} / {t[1] * 1e6:,.0f} us, residuals {r[0]:+.1%} / {r[1]:+.1%}"
        f" (max {worst:.1%}).",
        f'kernel_latency = "{fit["kernel_latency"] * 1e6:.2f} us"',
    ]


def write_latency(path, fit: dict) -> None:
    """Replace the latency lines of the 910C's generated [efficiency] section (from the first line of their
    comment to the `kernel_latency` key) by `latency_lines(fit)`."""
    import re

    text = path.read_text()
    pat = re.compile(
        r"^# (?:No per-kernel latency figure|attention_decode_serial: ).*?^kernel_latency = [^\n]*\n", re.M | re.S
    )
    if not pat.search(text):
        raise ValueError(f"{path}: no kernel_latency lines to replace")
    path.write_text(pat.sub(lambda _: "\n".join(latency_lines(fit)) + "\n", text, count=1))


def main(argv: list[str] | None = None) -> int:
    """Fit and print the 910C's kernel_latency from the paper's layer times; --write puts it in the TOML."""
    import argparse
    from pathlib import Path

    from cloudmatrix.specs.hardware import load_system

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument(
        "--write",
        action="store_true",
        help="rewrite kernel_latency, attention_prefill and vector_reduce in ascend-910c.toml",
    )
    args = ap.parse_args(argv)
    fits = {mb: fit_kernel_latency(microbatches=mb) for mb in (2, 1)}
    for mb, f in fits.items():
        tag = "used" if mb == 2 else "sensitivity: if the ablation ran one microbatch"
        print(
            f"ascend-910c kernel_latency, {mb} microbatch{'es' if mb > 1 else ''} ({tag}): "
            f"{f['kernel_latency'] * 1e6:.2f} us"
        )
        for m, fig in LAYER_FIGURES.items():
            print(
                f"  MTP {m}: paper {fig * 1e6:6.0f} us  model {f['model'][m] * 1e6:6.0f} us  "
                f"residual {f['residual'][m]:+.1%}  (latency 0: {f['model_without'][m] * 1e6:.0f} us)"
            )
    for name, table in (("A3 (910C die)", FA_A3_ROWS), ("910B2, cross-check", FA_910B2_ROWS)):
        f = fit_fa(table)
        res = " ".join(f"{s // 1024}K {r:+.1%}" for s, r in f["residual"].items())
        print(
            f"torch_npu FA on the {name}: {f['latency'] * 1e6:.1f} us/launch + {f['block'] * 1e6:.1f} us/block + "
            f"{f['per_key'] * 1e9:.2f} ns/key = {f['rate'] / 1e12:.0f} TFLOPS ({f['attention_prefill']:.3f} of 376), "
            f"half at {f['half_context']:,.0f} keys; residuals {res}"
        )
    f = fit_fa()
    ctx = (4096 + 1) / 2
    print(
        f"ascend-910c attention_prefill {f['attention_prefill']:.3f}, half_context {f['half_context']:.0f}: at a 4K "
        f"causal prompt ({ctx:.0f} keys per query) {f['attention_prefill'] * ctx / (ctx + f['half_context']):.1%} "
        "of the BF16 peak"
    )
    print("pto-isa A3 kernel figures against the twin's own kernel costs (nothing fitted):")
    for what, meas, twin, unit in pto_checks():
        ratio = f"twin/measured {twin / meas:.2f}" if twin == twin else "(no twin op of this kernel)"
        print(f"  {what:44s} measured {meas:7.3g} {unit:6s} twin {twin:7.3g}  {ratio}")
    ev = contention_evidence()
    print("AIC/AIV contention in MegaMoE (GEMM rate beside an AIV transfer / without; die's compulsory HBM traffic):")
    for n, (what, ratio, traffic) in enumerate(ev["cases"], 1):
        pred = ev["predicted"].get(n)
        tail = f"; a shared die bandwidth set by case 1 predicts x{pred:.2f}" if pred is not None else ""
        print(f"  {n}. {what}: x{ratio:.3f} at {traffic / 1e12:.2f} TB/s{tail}")
    print(
        f"  case 1 as a shared bandwidth: {ev['shared_bandwidth'] / 1e12:.2f} TB/s "
        f"({ev['shared_bandwidth'] / load_system('cloudmatrix384').chip.die.hbm_bandwidth:.0%} of HBM): "
        "cases 2 and 3 run more traffic than that with their GEMMs near full speed, so it is not the mechanism"
    )
    v = fit_vector_reduce()
    print(
        f"ascend-910c vector_reduce {v['vector_reduce']:.3f}: MegaMoE baseline unpermute {v['rate'] / 1e12:.3f} TB/s "
        f"on 48 AIVs (v1 schedule, partly beside the combine: {v['v1_rate'] / 1e12:.3f} TB/s)"
    )
    if args.write:
        p = Path(__file__).parents[2] / "src" / "cloudmatrix" / "specs" / "catalog" / "hardware" / "ascend-910c.toml"
        write_latency(p, fits[2])
        write_prefill_attention(p)
        write_vector_reduce(p)
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
