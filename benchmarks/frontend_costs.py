"""What a serving front end costs per request on this machine: tokenise, handle the HTTP request,
detokenise a token. These are the defaults of the simulator's `[frontend]` section.

    OMP_NUM_THREADS=1 python benchmarks/frontend_costs.py

- Tokenise: Hugging Face `tokenizers` (the Rust library vLLM and SGLang use), a byte-level BPE
  with a 32K vocabulary trained here on the Python sources installed in this environment (no
  download; DeepSeek-V3's own tokenizer is also a byte-level BPE, 129K vocabulary), encoding
  4,096-token prompts one at a time.
- Detokenise: decoding one new token id to text, once per streamed token (what incremental
  detokenisation does per output token, ignoring its prefix-offset bookkeeping).
- Request handling: a FastAPI + uvicorn server on 127.0.0.1 receiving a JSON completion request
  and answering with one JSON chunk, timed from an httpx client (keep-alive), median of many.
"""

from __future__ import annotations

import os
import socket
import statistics
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def corpus(limit_bytes: int = 6_000_000) -> list[str]:
    import fastapi

    root = Path(fastapi.__file__).parents[1]  # site-packages
    texts, size = [], 0
    for p in sorted(root.rglob("*.py")):
        try:
            t = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        texts.append(t)
        size += len(t)
        if size > limit_bytes:
            break
    return texts


def tokenizer_costs() -> tuple[float, float]:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = corpus()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=32_000, show_progress=False))
    joined = "\n".join(texts[len(texts) // 2 :])
    ids = tok.encode(joined).ids
    # prompts of 4,096 tokens: the text spans of consecutive 4,096-token windows
    prompts = [tok.decode(ids[i : i + 4096]) for i in range(0, min(len(ids), 4096 * 40), 4096)]
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        n = sum(len(tok.encode(p).ids) for p in prompts)
        best = min(best, (time.perf_counter() - t0) / n)
    sample = ids[:20_000]
    t0 = time.perf_counter()
    for i in sample:
        tok.decode([i])
    detok = (time.perf_counter() - t0) / len(sample)
    return best, detok


def request_cost(requests: int = 400) -> float:
    import httpx
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.post("/v1/completions")
    def complete(body: dict) -> dict:
        return {"id": "x", "choices": [{"text": " the", "index": 0}], "model": body.get("model")}

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    while not server.started:
        time.sleep(0.01)
    body = {"model": "m", "prompt": "word " * 4096, "max_tokens": 256, "stream": False}
    times = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
        for _ in range(requests):
            t0 = time.perf_counter()
            c.post("/v1/completions", json=body).raise_for_status()
            times.append(time.perf_counter() - t0)
    server.should_exit = True
    th.join(timeout=5)
    return statistics.median(times[20:])


if __name__ == "__main__":
    per_token, detok = tokenizer_costs()
    req = request_cost()
    print(f"tokenise            {per_token * 1e6:8.2f} us per prompt token  ({1 / per_token:,.0f} tokens/s, one core)")
    print(f"4,096-token prompt  {per_token * 4096 * 1e3:8.2f} ms")
    print(f"detokenise          {detok * 1e6:8.2f} us per output token")
    print(f"HTTP request        {req * 1e3:8.2f} ms (FastAPI + uvicorn, 4K-word JSON body, median)")
