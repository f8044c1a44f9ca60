"""Least-squares fits of a chip's few physical parameters to kernel rows, in the twin's own kernel formulas.

Each model below is the vectorised twin of a function in cloudmatrix.perf.kernels (same flops, bytes and
efficiency curves); tests/perf/test_calibration.py checks the two agree row by row. Residuals are relative
(log of predicted / measured), with a soft-L1 loss so that a handful of outlier rows (kernel-selection
glitches in the measurements) do not drag the fit. Every fit trains on 80% of the rows and reports its
error on the held-back 20% (fixed seed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from cloudmatrix.specs.hardware import BYTES_PER_ELEMENT

ACT = 2.0  # BF16 activations and outputs
SEED = 10
KV_LORA, ROPE, QK_HEAD, V_HEAD = 512, 64, 192, 128  # DeepSeek-V3 MLA dimensions, as the aic MLA tables use


@dataclass
class Fit:
    params: dict[str, float]
    train_rows: int
    test_rows: int
    mape: float  # held-out mean |pred/meas - 1|
    median_signed: float  # held-out median (pred/meas - 1)
    extra: dict = field(default_factory=dict)


def split(df: pd.DataFrame, seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """80/20 split, fixed seed."""
    rng = np.random.default_rng(seed)
    mask = rng.random(len(df)) < 0.8
    return df[mask], df[~mask]


def errors(pred: np.ndarray, meas: np.ndarray) -> tuple[float, float]:
    r = pred / meas - 1
    return float(np.mean(np.abs(r))), float(np.median(r))


def _sig(x):
    return 1 / (1 + np.exp(-x))


def _logit(p):
    return float(np.log(p / (1 - p)))


def _solve(residual, x0):
    return least_squares(residual, x0, loss="soft_l1", f_scale=0.05, max_nfev=400).x


# ------------------------------------------------------------------ GEMM


def gemm_model(df: pd.DataFrame, peaks: dict[str, float], bw: float, p: dict[str, float]) -> np.ndarray:
    """kernels.gemm for every row: latency + max(compute at the saturating efficiency, HBM time)."""
    m, n, k = (df[c].to_numpy(float) for c in ("m", "n", "k"))
    out = np.empty(len(df))
    for prec in df["prec"].unique():
        s = (df["prec"] == prec).to_numpy()
        wb = BYTES_PER_ELEMENT[prec]
        in_b = wb if wb <= 1 else ACT
        eff = (
            p[f"{prec}.peak"]
            * m[s] / (m[s] + p[f"{prec}.half_rows"])
            * n[s] / (n[s] + p[f"{prec}.half_n"])
            * k[s] / (k[s] + p[f"{prec}.half_k"])
        )  # fmt: skip
        comp = 2 * m[s] * n[s] * k[s] / (peaks[prec] * eff)
        mem = (m[s] * k[s] * in_b + k[s] * n[s] * wb + m[s] * n[s] * ACT) / (bw * p["memory"])
        out[s] = p[f"{prec}.latency"] + np.maximum(comp, mem)
    return out


def fit_gemm(df: pd.DataFrame, peaks: dict[str, float], bw: float) -> Fit:
    """memory shared; peak, half_rows, half_n, half_k and launch latency per precision."""
    precs = sorted(df["prec"].unique())
    train, test = split(df)

    def unpack(x):
        p = {"memory": float(_sig(x[0]))}
        for i, prec in enumerate(precs):
            a, b, c, d, e = x[1 + 5 * i : 6 + 5 * i]
            p[f"{prec}.peak"] = float(_sig(a))
            p[f"{prec}.half_rows"] = float(np.exp(b))
            p[f"{prec}.half_n"] = float(np.exp(c))
            p[f"{prec}.half_k"] = float(np.exp(d))
            p[f"{prec}.latency"] = float(np.exp(e))
        return p

    t = train["t"].to_numpy()
    x0 = [_logit(0.85)] + [_logit(0.8), np.log(32.0), np.log(64.0), np.log(256.0), np.log(5e-6)] * len(precs)
    x = _solve(lambda x: np.log(gemm_model(train, peaks, bw, unpack(x)) / t), x0)
    p = unpack(x)
    mape, med = errors(gemm_model(test, peaks, bw, p), test["t"].to_numpy())
    per = {}
    for prec in precs:
        s = test[test["prec"] == prec]
        per[prec] = errors(gemm_model(s, peaks, bw, p), s["t"].to_numpy())
    return Fit(p, len(train), len(test), mape, med, {"per_precision": per})


# ------------------------------------------------------------------ vector (quantise)


def quant_model(df: pd.DataFrame, bw: float, vector: float, latency: float) -> np.ndarray:
    """kernels.vector_op: read BF16, write the 1-byte quantised copy, 3 bytes per element."""
    return latency + df["m"].to_numpy(float) * df["k"].to_numpy(float) * 3.0 / (bw * vector)


def fit_vector(df: pd.DataFrame, bw: float) -> Fit:
    train, test = split(df)
    t = train["t"].to_numpy()
    x = _solve(lambda x: np.log(quant_model(train, bw, _sig(x[0]), np.exp(x[1])) / t), [_logit(0.8), np.log(2e-6)])
    v, lat = float(_sig(x[0])), float(np.exp(x[1]))
    mape, med = errors(quant_model(test, bw, v, lat), test["t"].to_numpy())
    return Fit({"vector": v, "vector_latency": lat}, len(train), len(test), mape, med)


# ------------------------------------------------------------------ MLA


def mla_gen_model(df: pd.DataFrame, peak: float, bw: float, ac: float, am: float, latency: float) -> np.ndarray:
    """kernels.mla_decode: one query token per sequence, context = step + isl tokens in the cache."""
    b = df["batch_size"].to_numpy(float)
    ctx = df["step"].to_numpy(float) + df["isl"].to_numpy(float)
    h = df["num_heads"].to_numpy(float)
    kvb = np.where(df["kv_cache_dtype"].to_numpy() == "fp8", 1.0, 2.0)
    flops = 2 * b * h * ctx * (2 * KV_LORA + ROPE)
    nbytes = b * ctx * (KV_LORA + ROPE) * kvb
    return latency + np.maximum(flops / (peak * ac), nbytes / (bw * am))


def mla_ctx_model(
    df: pd.DataFrame, peak: float, bw: float, ap: float, half_ctx: float, am: float, latency: float
) -> np.ndarray:
    """kernels.mla_prefill: causal, mean context (isl + 1) / 2, efficiency saturating with it."""
    b, isl, h = (df[c].to_numpy(float) for c in ("batch_size", "isl", "num_heads"))
    tokens = b * isl
    ctx = (isl + 1) / 2
    flops = 2 * tokens * h * ctx * (QK_HEAD + V_HEAD)
    nbytes = tokens * h * (2 * QK_HEAD + 2 * V_HEAD) * ACT
    return latency + np.maximum(flops / (peak * ap * ctx / (ctx + half_ctx)), nbytes / (bw * am))


def fit_mla(gen: pd.DataFrame, ctx: pd.DataFrame, peak: float, bw: float) -> tuple[Fit, Fit]:
    """Decode: attention_compute, attention_memory and the attention kernels' fixed latency; prefill:
    attention_prefill with that latency and memory fraction."""
    gtr, gte = split(gen)
    t = gtr["t"].to_numpy()
    x = _solve(
        lambda x: np.log(mla_gen_model(gtr, peak, bw, _sig(x[0]), _sig(x[1]), np.exp(x[2])) / t),
        [_logit(0.6), _logit(0.85), np.log(10e-6)],
    )
    ac, am, latency = float(_sig(x[0])), float(_sig(x[1])), float(np.exp(x[2]))
    g = Fit(
        {"attention_compute": ac, "attention_memory": am, "attention_latency": latency},
        len(gtr),
        len(gte),
        *errors(mla_gen_model(gte, peak, bw, ac, am, latency), gte["t"].to_numpy()),
    )
    ctr, cte = split(ctx)
    t = ctr["t"].to_numpy()

    def model(d, x):
        return mla_ctx_model(d, peak, bw, _sig(x[0]), np.exp(x[1]), am, np.exp(x[2]))

    x = _solve(lambda x: np.log(model(ctr, x) / t), [_logit(0.6), np.log(256.0), np.log(15e-6)])
    params = {
        "attention_prefill": float(_sig(x[0])),
        "attention_prefill_half_context": float(np.exp(x[1])),
        "attention_prefill_latency": float(np.exp(x[2])),
    }
    c = Fit(params, len(ctr), len(cte), *errors(model(cte, x), cte["t"].to_numpy()))
    return g, c


# ------------------------------------------------------------------ MoE (grouped GEMM)


def moe_per_die(df: pd.DataFrame) -> pd.DataFrame:
    """The per-GPU grouped GEMM of an aic MoE row: local experts, local intermediate size, token copies.
    Balanced routing: every GPU receives num_tokens * topk / ep copies; the experts that receive any are
    min(local experts, copies). Every GPU's op takes in all num_tokens tokens (the measurement runs
    TensorRT-LLM's fused op on the whole batch, as its attention-DP all-gather path does, and keeps the rows
    routed to its own experts)."""
    out = pd.DataFrame(index=df.index)
    out["rows"] = df["num_tokens"] * df["topk"] / df["moe_ep_size"]
    out["tokens"] = df["num_tokens"].astype(float)
    local = df["num_experts"] / df["moe_ep_size"]
    out["experts"] = np.minimum(local, np.maximum(out["rows"], 1.0))
    out["hidden"] = df["hidden_size"].astype(float)
    out["inter"] = df["inter_size"] / df["moe_tp_size"]
    out["prec"] = df["prec"]
    out["t"] = df["t"]
    return out


def moe_model(d: pd.DataFrame, peaks: dict[str, float], bw: float, p: dict[str, dict], memory: float) -> np.ndarray:
    """kernels.grouped_gemm with shapes ((hidden, 2 inter), (inter, hidden)): two launches, then the op's pass over
    the tokens it takes in (tokens x hidden x token_bytes at HBM rate). p[precision] holds that precision's curve
    (peak, half_rows, half_n, half_k, latency, token_bytes)."""
    rows, e, h, i = (d[c].to_numpy(float) for c in ("rows", "experts", "hidden", "inter"))
    per = rows / e
    out = np.empty(len(d))
    for prec in d["prec"].unique():
        s = (d["prec"] == prec).to_numpy()
        q = p[prec]
        wb = BYTES_PER_ELEMENT[prec]
        in_b = wb if wb <= 1 else ACT
        comp = np.zeros(s.sum())
        params = np.zeros(s.sum())
        act = np.zeros(s.sum())
        for k, n in ((h[s], 2 * i[s]), (i[s], h[s])):
            eff = q["peak"] * per[s] / (per[s] + q["half_rows"]) * n / (n + q["half_n"]) * k / (k + q["half_k"])
            comp += 2 * rows[s] * k * n / (peaks[prec] * eff)
            params += k * n
            act += rows[s] * (k * in_b + n * ACT)
        mem = (params * e[s] * wb + act) / (bw * memory)
        tok = d["tokens"].to_numpy(float)[s] * h[s] * q.get("token_bytes", 0.0) / bw
        out[s] = 2 * q["latency"] + np.maximum(comp, mem) + tok
    return out


def fit_moe(df: pd.DataFrame, peaks: dict[str, float], bw: float, memory: float) -> Fit:
    """Per precision: peak, half_rows (rows per expert), half_n, half_k and the per-launch latency of the grouped
    GEMM, and token_bytes, the op's routing / permutation / finalize traffic per hidden element of each token it
    takes in (without it the curve absorbed that per-token cost into the GEMM efficiency: at 512-1,024 rows per
    expert the DeepSeek-shape nvfp4 rows ran 1.4-1.7x the table at EP2 and the residual rose with the
    intermediate size, from -14% at <= 512 to +58% at > 4,096 on GB300)."""
    d = moe_per_die(df)
    train, test = split(d)

    def unpack(x):
        return {
            "peak": float(_sig(x[0])),
            "half_rows": float(np.exp(x[1])),
            "half_n": float(np.exp(x[2])),
            "half_k": float(np.exp(x[3])),
            "latency": float(np.exp(x[4])),
            "token_bytes": float(np.exp(x[5])),
        }

    p = {}
    for prec in sorted(train["prec"].unique()):
        tr = train[train["prec"] == prec]
        t = tr["t"].to_numpy()
        x = _solve(
            lambda x, tr=tr, t=t, prec=prec: np.log(moe_model(tr, peaks, bw, {prec: unpack(x)}, memory) / t),
            [_logit(0.6), np.log(16.0), np.log(64.0), np.log(256.0), np.log(10e-6), np.log(4.0)],
        )
        p[prec] = unpack(x)
    mape, med = errors(moe_model(test, peaks, bw, p, memory), test["t"].to_numpy())
    per = {}
    for prec in sorted(test["prec"].unique()):
        s = test[test["prec"] == prec]
        per[prec] = errors(moe_model(s, peaks, bw, p, memory), s["t"].to_numpy())
    flat = {f"{prec}.{k}": v for prec, q in p.items() for k, v in q.items()}
    return Fit(flat, len(train), len(test), mape, med, {"per_precision": per, "curves": p})


# ------------------------------------------------------------------ collectives


def volume_factor(kind: np.ndarray, n: np.ndarray, in_switch_reduction: bool) -> np.ndarray:
    """kernels.collective's per-rank link volume as a multiple of the table's message (NCCL-tests convention: an
    all-gather's message is its gathered output, n shards, so (n-1) shards = (n-1)/n of the message)."""
    ar = (n - 1) / n if in_switch_reduction else 2 * (n - 1) / n
    return np.where(kind == "all_reduce", ar, (n - 1) / n)


def nccl_model(df: pd.DataFrame, bw: float, lat: float, sync: float, eff: float, in_switch: bool) -> np.ndarray:
    """kernels.collective: latency + sync per doubling of the group (twice for a ring all-reduce) + volume."""
    n = df["num_gpus"].to_numpy(float)
    kind = df["kind"].to_numpy()
    nbytes = df["message_size"].to_numpy(float) * 2.0  # half
    steps = np.log2(n) * np.where((kind == "all_reduce") & (not in_switch), 2.0, 1.0)
    return lat + sync * steps + nbytes * volume_factor(kind, n, in_switch) / (bw * eff)


def fit_nccl(df: pd.DataFrame, bw: float, in_switch: bool) -> Fit:
    train, test = split(df)
    t = train["t"].to_numpy()

    def model(d, x):
        return nccl_model(d, bw, np.exp(x[0]), np.exp(x[1]), _sig(x[2]), in_switch)

    x = _solve(lambda x: np.log(model(train, x) / t), [np.log(3e-6), np.log(3e-6), _logit(0.7)])
    params = {
        "collective_latency": float(np.exp(x[0])),
        "collective_sync_per_log2_rank": float(np.exp(x[1])),
        "collective_efficiency": float(_sig(x[2])),
    }
    mape, med = errors(model(test, x), test["t"].to_numpy())
    per = {}
    for kind in sorted(test["kind"].unique()):
        s = test[test["kind"] == kind]
        per[kind] = errors(model(s, x), s["t"].to_numpy())
    return Fit(params, len(train), len(test), mape, med, {"per_kind": per, "x": x})


# ------------------------------------------------------------------ EP dispatch / combine (DeepEP low latency)

DEEPEP_FP8_SCALE_GROUP = 128  # DeepEP low-latency dispatch: FP8 with one fp32 scale per 128 channels


def ep_model(df: pd.DataFrame, op: str, bw: float, latency: float, eff: float, sync: float) -> np.ndarray:
    """comm.ep_all_to_all: t = latency + T k m (1 - 1/EP) / (B eff) + sync log2(EP)."""
    h = df["hidden_size"].to_numpy(float)
    m = h + 4 * h / DEEPEP_FP8_SCALE_GROUP if op == "dispatch" else 2 * h
    ep = 8.0 * df["node_num"].to_numpy(float)
    vol = df["num_token"].to_numpy(float) * df["num_topk"].to_numpy(float) * m * (1 - 1 / ep)
    return latency + vol / (bw * eff) + sync * np.log2(ep)


def fit_ep(df: pd.DataFrame, bw: float, latency: float) -> Fit:
    """dispatch_efficiency, combine_efficiency and sync_per_log2_rank of the NVLink plane, the fabric's one-message
    `latency` a fixed input. One node only (EP8): sync is the whole fixed cost above `latency`, spread as
    log2(8) = 3 doublings; larger EP groups extrapolate it."""
    train, test = split(df)
    td = train["dispatch_avg_t_us"].to_numpy() * 1e-6
    tc = train["combine_avg_t_us"].to_numpy() * 1e-6

    def res(x, d, a, b):
        ed, ec, sync = _sig(x[0]), _sig(x[1]), np.exp(x[2])
        return np.concatenate(
            [np.log(ep_model(d, "dispatch", bw, latency, ed, sync) / a),
             np.log(ep_model(d, "combine", bw, latency, ec, sync) / b)]
        )  # fmt: skip

    x = _solve(lambda x: res(x, train, td, tc), [_logit(0.5), _logit(0.5), np.log(2e-6)])
    ed, ec, sync = float(_sig(x[0])), float(_sig(x[1])), float(np.exp(x[2]))
    per = {}
    allp, allm = [], []
    for op, e, col in (("dispatch", ed, "dispatch_avg_t_us"), ("combine", ec, "combine_avg_t_us")):
        p, meas = ep_model(test, op, bw, latency, e, sync), test[col].to_numpy() * 1e-6
        per[op] = errors(p, meas)
        allp.append(p)
        allm.append(meas)
    mape, med = errors(np.concatenate(allp), np.concatenate(allm))
    params = {"dispatch_efficiency": ed, "combine_efficiency": ec, "sync_per_log2_rank": sync}
    return Fit(params, 2 * len(train), 2 * len(test), mape, med, {"per_op": per})


# ------------------------------------------------------------------ EP dispatch / combine (prefill throughput kernels)

DEEPEP_NORMAL_SMS = 20  # DeepEP Buffer.num_sms default: the SMs its normal kernels get unless a stack sets more
NVFP4_BYTES_PER_ELEMENT = 0.5 + 1 / 16  # = perf/moe.py NVFP4_BYTES_PER_ELEMENT


def ep_prefill_model(
    df: pd.DataFrame, op: str, bw: float, latency: float, eff: float, per_copy: float = 0.0
) -> np.ndarray:
    """comm.ep_all_to_all with prefill=True on a plane with `prefill_latency`: each token once per remote die
    among its top-k experts, t = latency + T R (m / (B eff) + per_copy), R = (EP - 1)(1 - (1 - 1/EP)^k).
    Columns: ep, tokens (per rank), topk, <op>_bytes (per token copy)."""
    ep = df["ep"].to_numpy(float)
    sent = df["tokens"].to_numpy(float) * (ep - 1) * (1 - (1 - 1 / ep) ** df["topk"].to_numpy(float))
    return latency + sent * (df[f"{op}_bytes"].to_numpy(float) / (bw * eff) + per_copy)


def fit_ep_prefill(df: pd.DataFrame, bw: float) -> Fit:
    """prefill_latency and, per direction, the efficiency and the time per token copy of a plane's throughput
    kernels, from paired dispatch / combine rows (columns as ep_prefill_model, plus t_dispatch / t_combine in
    seconds). Without the per-copy term (bytes only) DeepEP normal's held-out error was 14-15% and its DeepSeek-shape
    rows (hidden 7,168, top-8) ran 20-36% slow in the twin: the kernels' time is not proportional to the bytes
    (hidden 2,048 rows -49%, 7,168 +28%)."""
    train, test = split(df)

    def unpack(x):
        return float(np.exp(x[0])), {
            "dispatch": (float(_sig(x[1])), float(np.exp(x[3]))),
            "combine": (float(_sig(x[2])), float(np.exp(x[4]))),
        }

    def res(x, d):
        lat, per_op = unpack(x)
        return np.concatenate(
            [np.log(ep_prefill_model(d, op, bw, lat, *per_op[op]) / d[f"t_{op}"].to_numpy()) for op in per_op]
        )

    x = _solve(lambda x: res(x, train), [np.log(20e-6), _logit(0.5), _logit(0.5), np.log(1e-9), np.log(1e-9)])
    lat, per_op = unpack(x)
    (ed, cd), (ec, cc) = per_op["dispatch"], per_op["combine"]
    per, allp, allm = {}, [], []
    for op in ("dispatch", "combine"):
        p, meas = ep_prefill_model(test, op, bw, lat, *per_op[op]), test[f"t_{op}"].to_numpy()
        per[op] = errors(p, meas)
        allp.append(p)
        allm.append(meas)
    by_ep = {}
    for ep in sorted(test["ep"].unique()):
        s = test[test["ep"] == ep]
        p = np.concatenate([ep_prefill_model(s, op, bw, lat, *per_op[op]) for op in ("dispatch", "combine")])
        by_ep[int(ep)] = errors(p, np.concatenate([s["t_dispatch"].to_numpy(), s["t_combine"].to_numpy()]))
    mape, med = errors(np.concatenate(allp), np.concatenate(allm))
    params = {
        "prefill_latency": lat,
        "prefill_dispatch_efficiency": ed,
        "prefill_combine_efficiency": ec,
        "prefill_dispatch_per_copy": cd,
        "prefill_combine_per_copy": cc,
    }
    return Fit(params, 2 * len(train), 2 * len(test), mape, med, {"per_op": per, "by_ep": by_ep})


def deepep_normal_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """DeepEP normal (intranode) rows at DeepEP's default SM count, FP8 dispatch with one fp32 scale per 128
    channels (DeepEP's and the twin's prefill format) and BF16 combine; expert counts large enough (>= 64)
    that the top-k draws are close to independent (the formula's assumption)."""
    d = frame[(frame["dispatch_sms"] == DEEPEP_NORMAL_SMS) & (frame["combine_sms"] == DEEPEP_NORMAL_SMS)]
    d = d[d["num_experts"] >= 64]
    h = d["hidden_size"].astype(float)
    return pd.DataFrame(
        {
            "ep": 8 * d["node_num"].to_numpy(),
            "tokens": d["num_token"].to_numpy(float),
            "topk": d["num_topk"].to_numpy(float),
            "dispatch_bytes": (h + 4 * h / DEEPEP_FP8_SCALE_GROUP).to_numpy(),
            "combine_bytes": (2 * h).to_numpy(),
            "t_dispatch": d["dispatch_transmit_us"].to_numpy() * 1e-6,
            "t_combine": d["combine_transmit_us"].to_numpy() * 1e-6,
        }
    )


def trtllm_alltoall_rows(frame: pd.DataFrame, kernel: str = "NVLinkOneSided") -> pd.DataFrame:
    """TensorRT-LLM's MNNVL all-to-all (trtllm_alltoall_perf): NVFP4 dispatch rows paired with the combine
    (BF16 outputs) rows of the same EP size and tokens per rank."""
    d = frame[(frame["kernel_source"] == kernel) & (frame["moe_dtype"] == "nvfp4")]
    key = ["moe_ep_size", "num_tokens", "hidden_size", "topk"]
    disp = d[d["op_name"] == "alltoall_dispatch"].set_index(key)["latency"]
    comb = d[d["op_name"] == "alltoall_combine"].set_index(key)["latency"]
    both = pd.concat({"d": disp, "c": comb}, axis=1).dropna().reset_index()
    h = both["hidden_size"].astype(float)
    return pd.DataFrame(
        {
            "ep": both["moe_ep_size"].to_numpy(),
            "tokens": both["num_tokens"].to_numpy(float),
            "topk": both["topk"].to_numpy(float),
            "dispatch_bytes": (h * NVFP4_BYTES_PER_ELEMENT).to_numpy(),
            "combine_bytes": (2 * h).to_numpy(),
            "t_dispatch": both["d"].to_numpy() * 1e-3,
            "t_combine": both["c"].to_numpy() * 1e-3,
        }
    )


# ------------------------------------------------------------------ MLA decode module (the whole attention block)

MODULE_GEMM = {"bfloat16": "bf16", "fp8_block": "fp8", "nvfp4": "fp4"}  # the module table's gemm_type


def mla_module_kernel_times(df: pd.DataFrame, model, system, backend: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Per module row, the twin's decode MLA block without its fixed costs: the sum of max(compute, memory) of
    the block's ops (perf/attention.py: prolog, o_proj quantisation, epilog, latent attention) for batch_size
    tokens over num_heads heads, context step + isl, at the row's projection and KV-cache precisions. The
    input norms and the TP all-reduce are outside the module (its rows run tp_size = 1). Second array: the same
    block with each kernel's own fixed latency (the twin without the module fit)."""
    from cloudmatrix.perf.attention import mla_decode_attention, mla_decode_projections
    from cloudmatrix.perf.context import DieContext
    from cloudmatrix.perf.deployment import Precisions, build_deployment

    out, own = np.empty(len(df)), np.empty(len(df))
    ctxs: dict[tuple, DieContext] = {}
    for i, r in enumerate(df.itertuples(index=False)):
        key = (r.gemm_type, r.kv_cache_dtype)
        c = ctxs.get(key)
        if c is None:
            p = MODULE_GEMM[r.gemm_type]
            kv = "fp8" if r.kv_cache_dtype == "fp8" else "bf16"
            prec = Precisions(attn_proj=p, experts=p, dense_ffn=p, attention="bf16", kv_cache=kv, dispatch="bf16")
            dep = build_deployment(model, dies=1, precision=prec, backend=backend)
            c = ctxs[key] = DieContext(model, system, dep)
        b, heads = float(r.batch_size), float(r.num_heads)
        ops = [*mla_decode_projections(c, b, heads), mla_decode_attention(c, b, b, float(r.step + r.isl), heads)]
        ops = [op for op in ops if op is not None]
        out[i] = sum(op.time - op.latency for op in ops)
        own[i] = sum(op.time for op in ops)
    return out, own


def fit_mla_module(df: pd.DataFrame, kernel_times: np.ndarray, own_latency: np.ndarray) -> Fit:
    """`mla_decode_block_latency` per projection precision: t = block latency + the block's kernel times.
    extra["before"]: held-out (MAPE, median) of the twin's per-kernel latencies on the same rows."""
    d = df.assign(s=kernel_times, own=own_latency, prec=df["gemm_type"].map(MODULE_GEMM))
    train, test = split(d)
    p = {}
    for prec in sorted(train["prec"].unique()):
        tr = train[train["prec"] == prec]
        s, t = tr["s"].to_numpy(), tr["t"].to_numpy()
        x = _solve(lambda x, s=s, t=t: np.log((np.exp(x[0]) + s) / t), [np.log(30e-6)])
        p[prec] = float(np.exp(x[0]))

    def model(d):
        return d["prec"].map(p).to_numpy() + d["s"].to_numpy()

    mape, med = errors(model(test), test["t"].to_numpy())
    per = {prec: errors(model(g), g["t"].to_numpy()) for prec, g in test.groupby("prec")}
    before = errors(test["own"].to_numpy(), test["t"].to_numpy())
    return Fit(p, len(train), len(test), mape, med, {"per_precision": per, "before": before})


def mla_prefill_module_times(df: pd.DataFrame, model, system, backend: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Per context-module row, the twin's prefill MLA block as the backend runs it (perf/attention.py, plain TP
    where the chip's backend table says so) for batch_size prompts of isl tokens over num_heads heads (a group of
    128 / num_heads dies), without the input norm and the TP collectives (the module runs tp_size = 1):
    (the block's kernel times without their fixed latencies, the same with each kernel's own latency)."""
    from cloudmatrix.perf.context import DieContext
    from cloudmatrix.perf.deployment import Precisions, build_deployment

    out, own = np.empty(len(df)), np.empty(len(df))
    for i, r in enumerate(df.itertuples(index=False)):
        p = MODULE_GEMM[r.gemm_type]
        kv = "fp8" if r.kv_cache_dtype == "fp8" else "bf16"
        prec = Precisions(attn_proj=p, experts=p, dense_ffn=p, attention="bf16", kv_cache=kv, dispatch="bf16")
        tp = int(round(model.heads / r.num_heads))
        dep = build_deployment(model, dies=tp, ep=tp, attn_tp=tp, precision=prec, backend=backend,
                               shared_expert_dies=0, redundant_experts=0)  # fmt: skip
        c = DieContext(model, system, dep)
        out[i], _ = _prefill_block_times(c, r.batch_size * r.isl / tp, float(r.isl))
        # the per-kernel latencies as the twin had them before this fit: the chip file's own block fit left out
        # (else a rerun would compare the fit with itself)
        _, own[i] = _prefill_block_times(_without_prefill_block(c), r.batch_size * r.isl / tp, float(r.isl))
    return out, own


def _prefill_block_times(c, tokens: float, prompt: float) -> tuple[float, float]:
    """(the prefill MLA block's kernel times without their fixed latencies, with them), norm and collectives out."""
    from cloudmatrix.perf.attention import mla_prefill_ops

    ops = [op for op in mla_prefill_ops(c, tokens, prompt) if op.kind != "comm" and op.name != "norms_residual"]
    return sum(op.time - op.latency for op in ops), sum(op.time for op in ops)


def _without_prefill_block(c):
    """The same die context with the chip's `mla_prefill_block_latency` removed."""
    import copy

    eff = c.chip.efficiency
    if not eff.mla_prefill_block_latency:
        return c
    system = copy.copy(c.system)
    system.chip = c.chip.model_copy(update={"efficiency": eff.model_copy(update={"mla_prefill_block_latency": {}})})
    bare = copy.copy(c)
    object.__setattr__(bare, "system", system)
    return bare
