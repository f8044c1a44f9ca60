"""Load test of `cloudmatrix serve` against `transformers serve` on the same model and threads (loopback only).

A closed loop: C clients each send the next of N streaming completion requests as soon as their previous
one ends, until all N are done (it stops by itself). Per request: TTFT (first streamed text), E2E, and
TPOT = (E2E - TTFT) / (output tokens - 1), output tokens counted by re-tokenising the streamed text with
the model's tokenizer (the same count for both servers). Each server runs as its own process on
127.0.0.1 at a free port with OMP_NUM_THREADS / --threads set alike, and is stopped by pid at the end.

    python benchmarks/serve_load.py --requests 32 --concurrency 8 --max-tokens 32
    python benchmarks/serve_load.py --baseline none          # ours only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "HAMLET.\nTo be, or not to be, that is the question:\n",
    "ROMEO.\nBut soft, what light through yonder window breaks?\n",
    "KING LEAR.\nBlow, winds, and crack your cheeks! rage! blow!\n",
    "MACBETH.\nIs this a dagger which I see before me,\n",
    "PORTIA.\nThe quality of mercy is not strain'd,\n",
    "JULIET.\nO Romeo, Romeo! wherefore art thou Romeo?\n",
    "PROSPERO.\nOur revels now are ended. These our actors,\n",
    "OTHELLO.\nIt is the cause, it is the cause, my soul,\n",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(kind: str, model: Path, threads: int, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if kind.startswith("cloudmatrix"):
        cmd = [sys.executable, "-m", "cloudmatrix.cli.main", "serve", "--model", str(model), "--port", str(port),
               "--served-model-name", "m"]  # fmt: skip
        # the disaggregated workers run 1 thread each; --threads sets the single process's
        cmd += ["--single-process", "--threads", str(threads)] if kind == "cloudmatrix-1proc" else []
    else:
        exe = Path(sys.executable).with_name("transformers")
        cmd = [str(exe), "serve", str(model), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
               "--dtype", "float32", "--log-level", "warning"]  # fmt: skip
        # Its --continuous-batching fails on DeepseekV3 (transformers 5.x: the paged cache's index_copy_ gets MLA's
        # latent shape, "Source/destination tensor must have same slice shapes"), so the baseline runs without it.
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server at {url} not ready after {timeout:.0f} s")


async def one(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> dict:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "stream": True}
    t0 = time.perf_counter()
    ttft, text = None, []
    async with client.stream("POST", f"{url}/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ev = json.loads(line[6:])
            piece = "".join(c.get("text") or "" for c in ev.get("choices", []))
            if piece:
                ttft = ttft if ttft is not None else time.perf_counter() - t0
                text.append(piece)
    return {"ttft": ttft, "e2e": time.perf_counter() - t0, "text": "".join(text)}


async def closed_loop(url: str, model: str, n: int, concurrency: int, max_tokens: int) -> tuple[list[dict], float]:
    todo = list(range(n))
    results: list[dict] = []
    async with httpx.AsyncClient(timeout=600) as client:

        async def worker() -> None:
            while todo:
                i = todo.pop(0)
                results.append(await one(client, url, model, PROMPTS[i % len(PROMPTS)], max_tokens))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return results, time.perf_counter() - t0


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def summarise(results: list[dict], wall: float, tokenizer) -> dict:
    toks = [len(tokenizer.encode(r["text"]).ids) for r in results]
    ttft = [r["ttft"] for r in results if r["ttft"] is not None]
    tpot = [(r["e2e"] - r["ttft"]) / (n - 1) for r, n in zip(results, toks, strict=True) if n > 1 and r["ttft"]]
    e2e = [r["e2e"] for r in results]
    out = {"requests": len(results), "output_tokens": sum(toks), "wall_s": wall, "tok_per_s": sum(toks) / wall}
    for name, xs in (("ttft", ttft), ("tpot", tpot), ("e2e", e2e)):
        out[name] = {"mean": statistics.fmean(xs), "p50": pct(xs, 50), "p90": pct(xs, 90), "p99": pct(xs, 99)}
    return out


def run(kind: str, args: argparse.Namespace, tokenizer) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(kind, args.model, args.threads, port, Path(f"/tmp/serve_load_{kind}.log"))
    try:
        wait_ready(url, proc, args.start_timeout)
        model = "m" if kind.startswith("cloudmatrix") else str(args.model)
        asyncio.run(closed_loop(url, model, min(4, args.requests), min(2, args.concurrency), 4))  # warm-up
        results, wall = asyncio.run(closed_loop(url, model, args.requests, args.concurrency, args.max_tokens))
        return summarise(results, wall, tokenizer)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    from tokenizers import Tokenizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "src/cloudmatrix/engine/default_model")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--baseline", choices=["transformers", "none"], default="transformers")
    ap.add_argument(
        "--ours", default="disagg,1proc", help="comma list: disagg (serve's default), 1proc (--single-process)"
    )
    ap.add_argument("--start-timeout", type=float, default=180)
    args = ap.parse_args()
    tokenizer = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    names = {"disagg": "cloudmatrix", "1proc": "cloudmatrix-1proc"}
    kinds = [names[o] for o in args.ours.split(",")] + (["transformers"] if args.baseline == "transformers" else [])
    rows = {k: run(k, args, tokenizer) for k in kinds}
    print(f"{args.requests} requests, concurrency {args.concurrency}, max_tokens {args.max_tokens}, "
          f"threads {args.threads}, model {args.model.name}")  # fmt: skip
    print(
        "cloudmatrix = serve's default (prefill worker + decode EP group of 2 + caching pool, 4 processes); "
        "cloudmatrix-1proc = serve --single-process (in-process engine with MTP)"
    )
    print(f"{'server':<19}{'tok/s':>8}{'TTFT p50':>10}{'p90':>8}{'TPOT p50':>10}{'p90':>8}{'E2E p50':>9}{'p90':>8}")
    for k, r in rows.items():
        t, p, e = r["ttft"], r["tpot"], r["e2e"]
        print(f"{k:<19}{r['tok_per_s']:>8.1f}{t['p50']:>10.3f}{t['p90']:>8.3f}"
              f"{p['p50']:>10.4f}{p['p90']:>8.4f}{e['p50']:>9.2f}{e['p90']:>8.2f}")  # fmt: skip
    if "transformers" in rows:
        b = rows["transformers"]
        for k in (k for k in rows if k != "transformers"):
            a = rows[k]
            ratio = {m: a[m]["p50"] / b[m]["p50"] for m in ("ttft", "tpot", "e2e")}
            print(f"{k} / transformers serve: throughput {a['tok_per_s'] / b['tok_per_s']:.2f}x, "
                  f"TTFT p50 {ratio['ttft']:.2f}, TPOT p50 {ratio['tpot']:.2f}, E2E p50 {ratio['e2e']:.2f} "
                  "(latency ratios below 1 = ours faster)")  # fmt: skip
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
