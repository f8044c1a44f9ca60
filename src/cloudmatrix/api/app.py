"""The OpenAI-compatible HTTP front end: /v1/completions, /v1/chat/completions (SSE), /v1/models, /health, /metrics.

Every request is checked here before the engine sees it (model name, prompt length against the
context, sampling values); a user error is a 4xx whose body is OpenAI's error object with a one-line
message. Accepted requests go to the `EngineLoop`; a full queue is a 429 with Retry-After; a client
that disconnects, or a request past its timeout, is aborted in the engine (its KV blocks are freed).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cloudmatrix.api.chat_template import ChatTemplate
from cloudmatrix.api.engine_loop import EngineDead, EngineLoop, QueueFull
from cloudmatrix.api.metrics import ServerMetrics
from cloudmatrix.api.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatMessageOut,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    ModelCard,
    ModelList,
    PromptTokensDetails,
    Usage,
)
from cloudmatrix.errors import CloudMatrixError


@dataclass
class ServerConfig:
    model_name: str
    model_dir: Path | None = None  # for the chat template and generation defaults
    max_pending: int = 64  # requests accepted at once (running + waiting); more get 429
    request_timeout_s: float = 300.0
    poll_s: float = 0.25  # how often a non-streaming request checks that its client is still there


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


def error_response(status: int, message: str, kind: str, headers: dict | None = None) -> JSONResponse:
    body = {"error": {"message": " ".join(message.split()), "type": kind, "param": None, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def _one_line_validation(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    e = errors[0]
    if e.get("type") == "json_invalid":
        return f"malformed JSON body: {e.get('ctx', {}).get('error', e.get('msg'))}"
    loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
    msg = str(e.get("msg", "invalid value")).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{loc or 'body'}: {msg}{more}"


def generation_defaults(model_dir: Path | None) -> dict[str, float]:
    """Default temperature from generation_config.json (HF: do_sample false -> greedy); OpenAI's 1.0 otherwise."""
    path = model_dir / "generation_config.json" if model_dir else None
    if path is None or not path.exists():
        return {"temperature": 1.0}
    gen = json.loads(path.read_text())
    if not gen.get("do_sample", False):
        return {"temperature": 0.0}
    return {"temperature": float(gen.get("temperature", 1.0))}


def _default_params_factory() -> Callable[..., Any]:
    from cloudmatrix.engine.runtime.params import SamplingParams

    return SamplingParams


class Server:
    """The state behind the routes: engine loop, tokenizer, template, metrics, limits."""

    def __init__(self, engine: Any, config: ServerConfig, params_factory: Callable[..., Any] | None = None):
        self.engine = engine
        self.config = config
        self.metrics = ServerMetrics(config.model_name)
        self.loop = EngineLoop(engine, self.metrics, max_pending=config.max_pending)
        self.tokenizer = engine.tokenizer
        self.max_model_len = int(engine.max_model_len)
        self.template = ChatTemplate.for_model(config.model_dir) if config.model_dir else ChatTemplate.plain()
        self.defaults = generation_defaults(config.model_dir)
        self.params_factory = params_factory or _default_params_factory()
        self.started = time.time()

    # -- request -> engine ---------------------------------------------------------------------------------
    def check_model(self, name: str) -> None:
        if name != self.config.model_name:
            raise ApiError(404, f"model {name!r} is not served here; GET /v1/models lists {self.config.model_name!r}",
                           "not_found_error")  # fmt: skip

    def prompt_ids(self, prompt: str | list[int] | list[str], special: bool) -> list[int]:
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            if len(prompt) != 1:
                raise ApiError(400, f"prompt holds {len(prompt)} strings; send one prompt per request")
            prompt = prompt[0]
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ApiError(400, "prompt is empty; send at least one non-blank character")
            return self.tokenizer.encode(prompt, add_special_tokens=special).ids
        if not prompt:
            raise ApiError(400, "prompt is empty; send at least one token")
        vocab = self.tokenizer.get_vocab_size()
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise ApiError(400, f"prompt token {bad[0]} is outside the vocabulary (0..{vocab - 1})")
        return list(prompt)

    def params(self, req: Any, prompt_len: int, max_tokens: int | None) -> Any:
        room = self.max_model_len - prompt_len
        if max_tokens is None:
            max_tokens = room
        if room < 1 or max_tokens > room:
            raise ApiError(
                400,
                f"prompt ({prompt_len} tokens) plus max_tokens ({max_tokens}) exceeds the model's context of "
                f"{self.max_model_len} tokens; shorten the prompt or lower max_tokens",
            )
        temperature = self.defaults["temperature"] if req.temperature is None else req.temperature
        try:
            p = self.params_factory(
                max_tokens=max_tokens, temperature=temperature, top_p=req.top_p, top_k=req.top_k, seed=req.seed,
                stop=req.stop_strings(), ignore_eos=req.ignore_eos,
            )  # fmt: skip
            if hasattr(p, "validate"):
                p.validate()
        except CloudMatrixError as e:
            raise ApiError(400, str(e)) from None
        return p

    def submit(self, rid: str, ids: list[int], params: Any) -> asyncio.Queue:
        try:
            return self.loop.submit(rid, ids, params)
        except QueueFull as e:
            self.metrics.rejected.inc()
            retry = max(1, math.ceil(self.loop.recent_e2e_s or 1.0))
            raise ApiError(429, f"server busy: {e}; retry after {retry} s", "rate_limit_error",
                           {"Retry-After": str(retry)}) from None  # fmt: skip
        except EngineDead as e:
            raise ApiError(503, str(e), "server_error") from None

    def deadline(self) -> float:
        return time.monotonic() + self.config.request_timeout_s

    async def next_output(self, request: Request, q: asyncio.Queue, deadline: float, poll: bool) -> Any | None:
        """The request's next RequestOutput; None when its client has gone (checked every poll_s if `poll`)."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ApiError(504, f"request timed out after {self.config.request_timeout_s:g} s; "
                               "raise --request-timeout or lower max_tokens", "timeout_error")  # fmt: skip
            if poll and time.monotonic() >= getattr(request.state, "next_poll", 0.0):
                request.state.next_poll = time.monotonic() + self.config.poll_s
                if await request.is_disconnected():
                    return None
            try:
                item = await asyncio.wait_for(q.get(), min(left, self.config.poll_s) if poll else left)
            except TimeoutError:
                continue
            if isinstance(item, CloudMatrixError):  # the engine refused it at admission
                raise ApiError(400, str(item))
            if isinstance(item, Exception):
                raise ApiError(503 if isinstance(item, EngineDead) else 500, str(item), "server_error")
            return item

    async def outputs(
        self, request: Request, rid: str, q: asyncio.Queue, deadline: float, poll: bool
    ) -> AsyncIterator[Any]:
        """The request's outputs until it finishes; aborts it in the engine if the reader stops early for any
        reason (client gone, timeout, cancelled stream). Abort is idempotent, so errors need no special case."""
        finished = False
        try:
            while not finished:
                item = await self.next_output(request, q, deadline, poll)
                if item is None:
                    return
                finished = item.finished
                yield item
        finally:
            if not finished:
                self.loop.abort(rid)


def usage(out: Any) -> Usage:
    return Usage(
        prompt_tokens=out.prompt_tokens,
        completion_tokens=out.output_tokens,
        total_tokens=out.prompt_tokens + out.output_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=out.cached_tokens),
    )


def sse(obj: Any) -> str:
    data = obj.model_dump_json(exclude_none=False) if hasattr(obj, "model_dump_json") else json.dumps(obj)
    return f"data: {data}\n\n"


def create_app(engine: Any, config: ServerConfig, params_factory: Callable[..., Any] | None = None) -> FastAPI:
    server = Server(engine, config, params_factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.loop.start()
        try:
            yield
        finally:
            server.loop.stop()

    app = FastAPI(title="cloudmatrix", lifespan=lifespan)
    app.state.server = server

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.kind, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, _one_line_validation(exc), "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return error_response(exc.status_code, str(exc.detail), kind)

    @app.get("/health")
    async def health() -> JSONResponse:
        stats = server.loop.last_stats
        body: dict[str, Any] = {"status": "ok", "model": config.model_name}
        if server.loop.last_health:  # e.g. a disaggregated engine restarting a worker: "degraded"
            body.update(server.loop.last_health)
        if not server.loop.alive:
            body = {"status": "error", "detail": server.loop.error or "the engine loop is not running"}
            return JSONResponse(body, status_code=503)
        if stats is not None:
            body.update(running=stats.running, waiting=stats.waiting, pending=server.loop.pending())
        return JSONResponse(body)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    def model_card() -> ModelCard:
        return ModelCard(id=config.model_name, created=int(server.started), max_model_len=server.max_model_len)

    @app.get("/v1/models")
    async def models() -> ModelList:
        return ModelList(data=[model_card()])

    @app.get("/v1/models/{name:path}")
    async def model(name: str) -> ModelCard:
        server.check_model(name)
        return model_card()

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        server.check_model(req.model)
        ids = server.prompt_ids(req.prompt, special=True)
        params = server.params(req, len(ids), req.max_tokens)
        rid = f"cmpl-{uuid.uuid4().hex}"
        q = server.submit(rid, ids, params)
        if req.stream:
            return await stream_response(request, rid, q, completion_chunks(rid, req))
        text, last = [], None
        async for out in server.outputs(request, rid, q, server.deadline(), poll=True):
            text.append(out.new_text)
            last = out
        if last is None:  # the client left; nobody reads this
            return Response(status_code=499)
        choice = CompletionChoice(text="".join(text), finish_reason=last.finish_reason)
        return CompletionResponse(id=rid, model=config.model_name, choices=[choice], usage=usage(last))

    @app.post("/v1/chat/completions")
    async def chat(req: ChatCompletionRequest, request: Request):
        server.check_model(req.model)
        messages = [{"role": m.role, "content": m.content} for m in req.messages]
        try:
            prompt = server.template.render(messages, req.add_generation_prompt)
        except CloudMatrixError as e:
            raise ApiError(400, str(e)) from None
        if not any(m["content"].strip() for m in messages):
            raise ApiError(400, "every message is empty; send some content")
        ids = server.prompt_ids(prompt, special=False)  # the template already placed any special tokens
        params = server.params(req, len(ids), req.token_limit())
        rid = f"chatcmpl-{uuid.uuid4().hex}"
        q = server.submit(rid, ids, params)
        if req.stream:
            return await stream_response(request, rid, q, chat_chunks(rid, req))
        text, last = [], None
        async for out in server.outputs(request, rid, q, server.deadline(), poll=True):
            text.append(out.new_text)
            last = out
        if last is None:
            return Response(status_code=499)
        choice = ChatChoice(message=ChatMessageOut(content="".join(text)), finish_reason=last.finish_reason)
        return ChatCompletionResponse(id=rid, model=config.model_name, choices=[choice], usage=usage(last))

    async def stream_response(request: Request, rid: str, q: asyncio.Queue, render) -> Response:
        # Wait for the first output before answering, so that an engine refusal is still a plain 4xx; the
        # client's disconnect is polled meanwhile (once streaming, Starlette cancels the body instead).
        deadline = server.deadline()
        try:
            first = await server.next_output(request, q, deadline, poll=True)
        except BaseException:
            server.loop.abort(rid)
            raise
        if first is None:
            server.loop.abort(rid)
            return Response(status_code=499)

        async def body() -> AsyncIterator[str]:
            rest = server.outputs(request, rid, q, deadline, poll=False)
            try:
                async for chunk in render(first, rest):
                    yield chunk
            except ApiError as e:  # timeout or engine failure mid-stream: say so in the stream, then end it
                yield sse({"error": {"message": e.message, "type": e.kind, "param": None, "code": e.status}})
            finally:  # also on cancellation (client gone): abort is idempotent, a no-op once finished
                await rest.aclose()
                server.loop.abort(rid)
            yield "data: [DONE]\n\n"

        return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    def completion_chunks(rid: str, req: CompletionRequest):
        async def render(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[str]:
            last = first
            async for out in _chain(first, rest):
                last = out
                if out.new_text or out.finished:
                    choice = CompletionChoice(text=out.new_text, finish_reason=out.finish_reason)
                    yield sse(CompletionResponse(id=rid, model=config.model_name, choices=[choice]))
            if req.include_usage:
                yield sse(CompletionResponse(id=rid, model=config.model_name, choices=[], usage=usage(last)))

        return render

    def chat_chunks(rid: str, req: ChatCompletionRequest):
        async def render(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[str]:
            role = ChatChunkChoice(delta=ChatDelta(role="assistant", content=""))
            yield sse(ChatCompletionChunk(id=rid, model=config.model_name, choices=[role]))
            last = first
            async for out in _chain(first, rest):
                last = out
                if out.new_text or out.finished:
                    delta = ChatDelta(content=out.new_text) if out.new_text else ChatDelta()
                    choice = ChatChunkChoice(delta=delta, finish_reason=out.finish_reason)
                    yield sse(ChatCompletionChunk(id=rid, model=config.model_name, choices=[choice]))
            if req.include_usage:
                yield sse(ChatCompletionChunk(id=rid, model=config.model_name, choices=[], usage=usage(last)))

        return render

    return app


async def _chain(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    yield first
    if not first.finished:
        async for out in rest:
            yield out
