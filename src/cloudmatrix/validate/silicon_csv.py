"""aiconfigurator-core's measured set (`systems/silicon_sample.csv`): read, keep DeepSeek-V3/R1, deduplicate.

The file is read from the installed package (the `validate` extra), never copied into this repo.
Each row is one benchmark point: a model on a system with one backend, aggregated (`agg`, one
pool) or disaggregated (`disagg`, prefill and decode pools), its parallel layout, ISL/OSL, client
concurrency and the measured mean TTFT and TPOT (ms).

Deduplication, in two steps (docs/accuracy.md explains why):

1. *Copies.* The same measurement appears up to three times (the file merges several dumps).
   Rows whose system, backend, mode, precision, ISL, OSL, concurrency and both measured values
   agree exactly are copies of one measurement: independent runs never agree to every digit of
   two floats. Of the copies we keep one: a complete one (worker counts and batch present, a
   recorded attention layout), then one whose layout adds up (MoE TP x EP = attention TP x DP),
   then the one with the fewest GPUs, then the newest dump (`db-dump` first). Before that, an
   aggregated copy that counts its GPUs twice (TP64 = MoE TP8 x EP8 for an 8-GPU `tp8_ep8` run) is
   read back to the worker that ran (`read_inflated_worker`; `SiliconRow.layout_from_id`).
2. *Repeats.* Distinct measurements of the same point (same conditions and layout as kept in 1)
   differ, for reasons the file does not record (MTP on or off, software version). They become
   one point whose TTFT and TPOT are the medians of the repeats.
"""

from __future__ import annotations

import csv
import math
import re
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from cloudmatrix.errors import CloudMatrixError

PACKAGE = "aiconfigurator_core"
CSV_NAME = "systems/silicon_sample.csv"
INSTALL_HINT = "pip install 'cloudmatrix[validate]'"


@dataclass(frozen=True)
class PoolLayout:
    """One worker shape of a measured deployment (AIC's naming: tp = attention TP, attention_dp = attention DP).

    `batch` is AIC's batch size: sequences per attention-DP rank of one worker. None = not recorded.
    """

    workers: int | None
    batch: int | None
    tp: int | None
    pp: int | None
    attention_dp: int | None
    moe_tp: int | None
    moe_ep: int | None

    @property
    def gpus(self) -> int | None:
        """GPUs of one worker: attention TP x DP x PP."""
        if self.tp is None or self.attention_dp is None:
            return None
        return self.tp * self.attention_dp * (self.pp or 1)

    @property
    def complete(self) -> bool:
        return None not in (self.workers, self.batch, self.tp, self.attention_dp, self.moe_tp, self.moe_ep)

    @property
    def consistent(self) -> bool:
        """MoE TP x EP covers the same GPUs as attention TP x DP (the rule AIC's own config checks)."""
        return (
            self.gpus is not None
            and self.moe_tp is not None
            and self.moe_ep is not None
            and (
                self.moe_tp * self.moe_ep == self.tp * self.attention_dp  # type: ignore[operator]
            )
        )

    def describe(self) -> str:
        def v(x: int | None) -> str:
            return "?" if x is None else str(x)

        return (
            f"{v(self.workers)} x [tp{v(self.tp)} dp{v(self.attention_dp)} moe_tp{v(self.moe_tp)} "
            f"ep{v(self.moe_ep)}, batch {v(self.batch)}]"
        )


@dataclass(frozen=True)
class SiliconRow:
    """One line of the CSV, parsed."""

    id: str
    source: str
    backend: str
    backend_version: str
    model: str  # HF model path
    system: str  # AIC system name (h200_sxm, gb200, ...)
    precision: str  # fp8, fp4, ...
    mode: str  # agg or disagg
    isl: int
    osl: int
    concurrency: int | None
    gemm_quant: str
    moe_quant: str
    agg: PoolLayout | None
    prefill: PoolLayout | None
    decode: PoolLayout | None
    ttft_s: float
    tpot_s: float
    layout_from_id: bool = False  # the CSV's layout counted the GPUs twice; read back from the run id
    gpu_total: bool = False  # its TP is a deployment's GPU total, its layout unknown (unmask_gpu_totals)

    @property
    def measured_on(self) -> str | None:
        """The measurement's date (YYYY-MM-DD) as silicon_data_source records it (`measured=...`); None if absent."""
        m = re.search(r"measured=(\d{4}-\d\d-\d\d)", self.source)
        return m.group(1) if m else None

    @property
    def pools(self) -> tuple[PoolLayout, ...]:
        return tuple(p for p in (self.agg, self.prefill, self.decode) if p is not None)

    @property
    def total_gpus(self) -> int | None:
        total = 0
        for p in self.pools:
            if p.gpus is None:
                return None
            total += p.gpus * (p.workers or 1)
        return total

    @property
    def complete(self) -> bool:
        return all(p.complete for p in self.pools)

    @property
    def consistent(self) -> bool:
        return all(p.consistent for p in self.pools)

    def conditions(self) -> tuple:
        """What was measured, without the layout: copies of one measurement share this and both values."""
        return (self.model_family, self.system, self.backend, self.mode, self.precision, self.isl, self.osl,
                self.concurrency)  # fmt: skip

    def layout_key(self) -> tuple:
        """The measured point: conditions, quantisation, layout and whether MTP ran (repeats of a point share
        this; an MTP run and a run without it are different points, never one median)."""
        return (*self.conditions(), self.gemm_quant, self.moe_quant, self.agg, self.prefill, self.decode,
                self.mtp_run)  # fmt: skip

    @property
    def mtp_run(self) -> bool:
        """The run decoded with MTP, as its image tells (the CSV has no speculative-decoding column)."""
        image = f"{self.backend_version} {self.source}"
        return any(self.backend == b and self.system == s and tag in image for b, s, tag in MTP_IMAGES)

    @property
    def model_family(self) -> str:
        return model_family(self.model)

    def describe_layout(self) -> str:
        if self.mode == "agg" and self.agg is not None:
            return "agg " + self.agg.describe()
        p = self.prefill.describe() if self.prefill else "?"
        d = self.decode.describe() if self.decode else "?"
        return f"prefill {p} + decode {d}"


@dataclass(frozen=True)
class Measurement:
    """A distinct measured point after deduplication: one kept copy, medians over its repeats."""

    row: SiliconRow  # the kept copy of the first repeat (its layout and conditions)
    ttft_s: float  # median over repeats
    tpot_s: float
    ids: tuple[str, ...] = field(default=())  # every CSV row id folded into this point
    copies: int = 1  # CSV rows that were copies of kept measurements
    repeats: int = 1  # distinct measurements of this point

    @property
    def id(self) -> str:
        return self.row.id


@dataclass(frozen=True)
class SiliconSet:
    """What the reader found: every row read, the DeepSeek points kept, and what was set aside."""

    path: str
    rows_read: int
    deepseek_rows: int
    other_models: dict[str, int]  # model path -> rows (outside this suite)
    measurements: list[Measurement]


def model_family(model_path: str) -> str:
    """A CSV model path -> the architecture it measures. DeepSeek-V3, V3.1 and R1 (and their quantised
    checkpoints) share one architecture and one config; the file labels one measurement 'V3' in one dump
    and 'R1' in another, so copies are matched on the architecture."""
    return "deepseek-v3-arch" if is_deepseek(model_path) else model_path


def is_deepseek(model_path: str) -> bool:
    return "deepseek" in model_path.lower()


def installed_csv_path() -> Path:
    """The CSV inside the installed aiconfigurator-core, or a one-line error naming the extra."""
    try:
        root = resources.files(PACKAGE)
    except ModuleNotFoundError:
        raise CloudMatrixError(
            f"the silicon suite reads aiconfigurator-core's measured set, which is not installed; "
            f"run `{INSTALL_HINT}` (or use --suite paper)"
        ) from None
    p = Path(str(root / CSV_NAME))
    if not p.exists():
        raise CloudMatrixError(f"{PACKAGE} is installed but has no {CSV_NAME}; reinstall it with `{INSTALL_HINT}`")
    return p


# ------------------------------------------------------------------ parsing
def _int(s: str | None) -> int | None:
    if s is None or s.strip() == "":
        return None
    v = float(s)
    if not math.isfinite(v):
        return None
    return int(round(v))


def _layout(r: dict[str, str], prefix: str) -> PoolLayout:
    batch_key = f"{prefix}batch_size"
    return PoolLayout(
        workers=_int(r.get(f"{prefix}num_workers")) if prefix else 1,
        batch=_int(r.get(batch_key)),
        tp=_int(r.get(f"{prefix}tp_size")),
        pp=_int(r.get(f"{prefix}pp_size")),
        attention_dp=_int(r.get(f"{prefix}attention_dp_size")),
        moe_tp=_int(r.get(f"{prefix}moe_tp_size")),
        moe_ep=_int(r.get(f"{prefix}moe_ep_size")),
    )


_CONCURRENCY = re.compile(r"silicon_concurrency=(\d+)")
# Images only InferenceMAX's MTP configs ran: from 2026-02-05/06 (.github/configs/nvidia-master.yaml at 5d517074 and
# 0aae52d4, mirror github.com/ajith-sirra-amd/InferenceMAX_Rocm_Team) dsr1-fp8-b200-trt-mtp and dsr1-fp4-b200-trt-mtp
# (dsr1_fp*_b200_trt_mtp.sh: speculative_config MTP, num_nextn_predict_layers 3, or 1 with DP attention) run
# tensorrt-llm release:1.2.0rc6.post3 while dsr1-fp{4,8}-b200-trt run 1.2.0rc6.post2; no config without MTP ever
# named post3 (the file's history to 2026-05-26). Before that both ran 1.1.0rc2.post2, and SGLang's MTP and plain
# configs share their images, so those runs cannot be told apart.
MTP_IMAGES = (("trtllm", "b200_sxm", "1.2.0rc6.post3"),)
# GPUs of one node of the HGX systems, where InferenceMAX's aggregated runs are single-node
SINGLE_NODE_GPUS = {"h100_sxm": 8, "h200_sxm": 8, "b200_sxm": 8, "b300_sxm": 8}
# InferenceMAX's run ids: `<head>_{agg|disagg}_<ISL>x<OSL>_c<conc>_tp<T>_ep<E>_<n>`, head = date, model, system,
# backend, precision (another dump writes `tp8_0_ep8_0`): T GPUs in the worker, the routed experts over E of them
# (its scripts' TP and EP_SIZE)
# (the worker suffix alone is enough where only T and E are needed)
_RUN_ID = re.compile(
    r"(?:^(?P<head>.+)_(?P<mode>agg|disagg)_\d+x\d+_c\d+)?_tp(?P<tp>\d+)(?:_0)?_ep(?P<ep>\d+)(?:_0)?_\d+$"
)


def read_inflated_worker(layout: PoolLayout, row_id: str, system: str) -> PoolLayout | None:
    """The worker an aggregated row really ran on, when the CSV's copy counts its GPUs twice; else None.

    One dump of the file writes an InferenceMAX `tp8_ep8` run (8 GPUs, attention TP8 or DP8, experts over
    8) as attention TP64 (or DP64) with MoE TP8 x EP8, and `tp4_ep4` as TP16 with MoE TP4 x EP4: attention
    spans T x E GPUs and MoE TP is T. Other copies of the same runs in the same file say TP8 / MoE EP8 (e.g.
    ids `..._tp8_0_ep8_0_*`: attention TP8 DP1, MoE TP1 EP8), and the runs' scripts are single-node ones
    (InferenceMAX benchmarks/single_node/dsr1_*.sh: one 8-GPU HGX node). The run id gives T and E where
    it has them; the `db-dump` copies (ids `..._cfgN`) do not, and there a layout wider than the node with
    attention = MoE TP x EP, both above 1, is the same inflation (T = MoE TP, E = MoE EP). Read back: T GPUs,
    EP E, MoE TP T / E, attention TP T (or DP T when the copy says DP), and the batch per DP rank rescaled so
    the worker holds the same sequences (the copy's batch is the concurrency over its DP)."""
    if None in (layout.tp, layout.attention_dp, layout.moe_tp, layout.moe_ep):
        return None
    tp, dp, moe_tp, ep = layout.tp, layout.attention_dp, layout.moe_tp, layout.moe_ep
    m = _RUN_ID.search(row_id)
    if m is not None:
        gpus = int(m["tp"])
        if int(m["ep"]) != ep:
            return None
    elif tp * dp > SINGLE_NODE_GPUS.get(system, tp * dp) and moe_tp > 1:  # type: ignore[operator]
        gpus = moe_tp  # type: ignore[assignment]
    else:
        return None
    if not (ep > 1 and tp * dp == gpus * ep and moe_tp == gpus and gpus % ep == 0):  # type: ignore[operator]
        return None
    new_tp, new_dp = (gpus, 1) if dp == 1 else (1, gpus)
    batch = None if layout.batch is None else max(1, layout.batch * dp // new_dp)  # type: ignore[operator]
    return PoolLayout(layout.workers, batch, new_tp, layout.pp, new_dp, gpus // ep, ep)


def parse_row(r: dict[str, str]) -> SiliconRow:
    m = _CONCURRENCY.search(r.get("silicon_data_source", ""))
    mode = r["mode"].strip()
    agg = _layout(r, "") if mode == "agg" else None
    read_from_id = agg is not None and (fixed := read_inflated_worker(agg, r["id"], r["system"].strip())) is not None
    if read_from_id:
        agg = fixed
    return SiliconRow(
        id=r["id"],
        source=r.get("silicon_data_source", ""),
        backend=r["backend"].strip(),
        backend_version=r.get("backend_version", "").strip(),
        model=r["model_path"].strip(),
        system=r["system"].strip(),
        precision=r["precision"].strip(),
        mode=mode,
        isl=int(float(r["isl"])),
        osl=int(float(r["osl"])),
        concurrency=int(m.group(1)) if m else None,
        gemm_quant=r.get("gemm_quant_mode", "").strip(),
        moe_quant=r.get("moe_quant_mode", "").strip(),
        agg=agg,
        prefill=_layout(r, "prefill_") if mode == "disagg" else None,
        decode=_layout(r, "decode_") if mode == "disagg" else None,
        ttft_s=float(r["silicon_ttft_ms"]) / 1e3,
        tpot_s=float(r["silicon_tpot_ms"]) / 1e3,
        layout_from_id=read_from_id,
    )


def read_rows(path: str | Path) -> list[SiliconRow]:
    """Every row of a silicon_sample-format CSV."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = {"id", "mode", "system", "model_path", "silicon_ttft_ms", "silicon_tpot_ms"} - set(
                reader.fieldnames or ()
            )
            if missing:
                raise CloudMatrixError(f"{path}: not a silicon_sample CSV (no column {', '.join(sorted(missing))})")
            rows = []
            for n, r in enumerate(reader, start=2):
                try:
                    rows.append(parse_row(r))
                except (KeyError, ValueError) as e:
                    raise CloudMatrixError(f"{path}:{n}: cannot read row {r.get('id', '?')!r} ({e})") from None
            return rows
    except OSError as e:
        raise CloudMatrixError(f"cannot read {path} ({e.strerror})") from None


# ------------------------------------------------------------------ deduplication
def _copy_preference(r: SiliconRow) -> tuple:
    """Sort key: the best copy of a measurement sorts first."""
    gpus = r.total_gpus
    return (
        not r.complete,
        not r.consistent,
        gpus if gpus is not None else math.inf,
        not r.source.startswith("db-dump"),
        r.id,
    )


def fold_copies(rows: Iterable[SiliconRow]) -> list[tuple[SiliconRow, list[SiliconRow]]]:
    """Group rows that are copies of one measurement; (kept copy, all copies) per measurement, in file order."""
    groups: dict[tuple, list[SiliconRow]] = {}
    for r in rows:
        groups.setdefault((*r.conditions(), r.ttft_s, r.tpot_s), []).append(r)
    return [(min(g, key=_copy_preference), g) for g in groups.values()]


def fold_repeats(kept: list[tuple[SiliconRow, list[SiliconRow]]]) -> list[Measurement]:
    """One point per measured layout: median TTFT and TPOT over its distinct measurements."""
    points: dict[tuple, list[tuple[SiliconRow, list[SiliconRow]]]] = {}
    for best, copies in kept:
        points.setdefault(best.layout_key(), []).append((best, copies))
    out = []
    for members in points.values():
        first = members[0][0]
        ids = tuple(r.id for _, copies in members for r in copies)
        out.append(
            Measurement(
                row=first,
                ttft_s=statistics.median(b.ttft_s for b, _ in members),
                tpot_s=statistics.median(b.tpot_s for b, _ in members),
                ids=ids,
                copies=len(ids) - len(members),
                repeats=len(members),
            )
        )
    return out


DEEPSEEK_HEADS = 128  # num_attention_heads of DeepSeek-V3/R1 (config.json)


def unmask_gpu_totals(rows: list[SiliconRow]) -> list[SiliconRow]:
    """Aggregated `tpN_ep1` series whose N is the deployment's GPU total, with their worker count unknown.

    The 2026-04-06 dump has GB200 series (one id head: date, model, system, backend, precision) whose
    aggregated run ids say `tpN_ep1` with N = 12, 20, 24, 28, 32, 36, 40, 48, 52, 64, 72, recorded as
    attention TP N and MoE TP N. Most of these N divide no DeepSeek head count, so no attention TP could
    be N: N counts the GPUs of a deployment whose layout the file does not record (the same ids appear
    as `disagg` rows with TTFT / TPOT within a few %, e.g. c538 tp64: 1,389 / 10.07 ms agg, 1,315 /
    10.10 ms disagg). A series with one such N is read as totals throughout: its rows become incomplete
    (refused as such, on the twin's side and on aiconfigurator's). Series whose every N divides the heads
    (the HGX tp4/tp8 runs) are left as recorded."""
    def tp_n_ep1(r: SiliconRow) -> re.Match | None:
        m = _RUN_ID.search(r.id) if r.mode == "agg" else None
        return m if m is not None and m["mode"] == "agg" and m["ep"] == "1" else None

    series: dict[str, set[int]] = {}
    for r in rows:
        if m := tp_n_ep1(r):
            series.setdefault(m["head"], set()).add(int(m["tp"]))
    totals = {head for head, tps in series.items() if any(DEEPSEEK_HEADS % n for n in tps)}
    out = []
    for r in rows:
        m = tp_n_ep1(r) if r.agg is not None else None
        if m is not None and m["head"] in totals:
            r = replace(r, agg=replace(r.agg, workers=None), gpu_total=True)  # type: ignore[arg-type]
        out.append(r)
    return out


def deduplicate(rows: Iterable[SiliconRow]) -> list[Measurement]:
    return fold_repeats(fold_copies(unmask_gpu_totals(list(rows))))


def load_silicon_set(path: str | Path | None = None) -> SiliconSet:
    """The DeepSeek-V3/R1 points of the installed CSV (or of `path`), deduplicated."""
    p = Path(path) if path is not None else installed_csv_path()
    rows = read_rows(p)
    deepseek = [r for r in rows if is_deepseek(r.model)]
    others: dict[str, int] = {}
    for r in rows:
        if not is_deepseek(r.model):
            others[r.model] = others.get(r.model, 0) + 1
    return SiliconSet(str(p), len(rows), len(deepseek), others, deduplicate(deepseek))
