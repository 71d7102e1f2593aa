"""The worker's HTTP app: OpenAI-compatible generation, health, readiness and metrics.

``create_app(config)`` refuses machine-dependent config errors at once, then loads the model,
warms it up and starts the scheduler on a background thread; until that is done ``/readyz`` and
the generation routes answer 503. With TLS, only callers whose SPIFFE ID is allowed get past
:class:`ClientIdentityMiddleware` (403 otherwise, fail closed: no identity, no access).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from opentelemetry.sdk.trace import SpanProcessor
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from inference._openai import (
    ChatCompletionRequest,
    CompletionRequest,
    ResponseShape,
    error_body,
    format_validation_error,
    sse,
)
from inference.config import DType, WorkerConfig, check_runtime
from inference.errors import (
    InferenceError,
    OverloadedError,
    RequestError,
    WorkerStoppedError,
)
from inference.metrics import WorkerMetrics
from inference.scheduler import (
    Failed,
    Finished,
    RequestHandle,
    SamplingParams,
    Scheduler,
    TextDelta,
)
from inference.tracing import TracingMiddleware, build_tracer
from pki.asgi_tls import peer_identity
from pki.errors import BastionError
from pki.identity import Identity

__all__ = ["ClientIdentityMiddleware", "WorkerState", "create_app", "create_ops_app"]

logger = logging.getLogger("bastion.worker")


class WorkerState:
    """What the routes need: the config, metrics, and (once ready) the model and scheduler."""

    def __init__(self, config: WorkerConfig, device: str) -> None:
        self.config = config
        self.device = device
        self.metrics = WorkerMetrics(cuda=device.startswith("cuda"))
        self.phase = "loading"
        self.failure: str | None = None
        self.model_name: str | None = None
        self.tokenizer: Any = None
        self.scheduler: Scheduler | None = None
        self.on_failure: Callable[[str], None] | None = None

    def fail(self, reason: str) -> None:
        self.phase = "failed"
        self.failure = reason
        self.metrics.ready.set(0)
        logger.error("worker not ready: %s", reason)
        if self.on_failure is not None:
            self.on_failure(reason)

    def ready_scheduler(self) -> Scheduler:
        scheduler = self.scheduler
        if self.phase != "ready" or scheduler is None:
            raise WorkerStoppedError(f"the worker is not ready ({self.phase}); retry later")
        if scheduler.failure is not None:
            raise WorkerStoppedError(f"the worker's engine has stopped ({scheduler.failure})")
        return scheduler


def _boot(state: WorkerState, before_ready: Callable[[], None] | None) -> None:
    import torch

    from inference._engine import BatchEngine
    from inference.loading import eos_token_ids, load_served_model

    config = state.config
    try:
        if config.runtime.threads is not None:
            torch.set_num_threads(config.runtime.threads)
        served = load_served_model(config, state.device)
        state.metrics.load_seconds.set(served.load_seconds)
        eos = eos_token_ids(served.model, served.tokenizer)
        pad = served.tokenizer.pad_token_id
        engine = BatchEngine(
            served.model,
            max_rows=config.batching.max_batch_size,
            pad_token_id=int(pad) if pad is not None else min(eos),
            max_positions=config.batching.max_total_tokens + 1,
            # float32 is the exact reference path: a suffix prefilled against cached keys rounds
            # differently from a full prefill, so greedy text could change with cache state.
            prefix_cache_tokens=(
                0 if config.runtime.dtype is DType.FLOAT32 else config.batching.prefix_cache_tokens
            ),
            fast=served.fast if served.fast is not None else True,
        )
        scheduler = Scheduler(
            engine, served.tokenizer, config.batching, state.metrics, eos_token_ids=eos
        )
        state.phase = "warming_up"
        if config.warmup.enabled:
            state.metrics.warmup_seconds.set(scheduler.warmup(config.warmup))
        if before_ready is not None:
            before_ready()
        scheduler.start()
        state.model_name, state.tokenizer, state.scheduler = (
            served.name,
            served.tokenizer,
            scheduler,
        )
        state.phase = "ready"
        state.metrics.ready.set(1)
        logger.info(
            "worker ready: model=%s device=%s load=%.1fs",
            served.name,
            state.device,
            served.load_seconds,
        )
    except BastionError as exc:
        state.fail(str(exc))
    except Exception as exc:  # fail closed: never ready, reason logged without payloads
        logger.exception("worker boot failed")
        state.fail(f"unexpected {type(exc).__name__} while loading; see the worker log")


# -- errors -----------------------------------------------------------------------------------


def _error(
    status: int,
    message: str,
    *,
    type_: str,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(message, type_=type_, param=param, code=code),
        status_code=status,
        headers=headers,
    )


def _from_exception(exc: InferenceError) -> JSONResponse:
    if isinstance(exc, OverloadedError):
        return _error(
            429,
            str(exc),
            type_="rate_limit_exceeded",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, RequestError):
        return _error(
            exc.status,
            str(exc),
            type_="invalid_request_error",
            param=exc.param,
            code=exc.code,
            # the unread rest of an oversized body must not be parsed as the next request
            headers={"Connection": "close"} if exc.status == 413 else None,
        )
    if isinstance(exc, WorkerStoppedError):
        return _error(
            503,
            str(exc),
            type_="service_unavailable",
            code="not_ready",
            headers={"Retry-After": "5"},
        )
    return _error(500, "internal error in the inference worker", type_="server_error")


async def _inference_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, InferenceError):  # pragma: no cover - registered for InferenceError
        raise exc
    return _from_exception(exc)


# Starlette's own refusals (no route, wrong method), in the OpenAI shape. The message is fixed
# per status: the path the caller sent is never echoed (it may carry an identifier).
_HTTP_ERRORS: dict[int, tuple[str, str, str]] = {
    404: ("no such route on this worker", "invalid_request_error", "not_found"),
    405: (
        "method not allowed on this route; the Allow header lists the allowed ones",
        "invalid_request_error",
        "method_not_allowed",
    ),
}


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # pragma: no cover - registered for HTTPException
        raise exc
    message, type_, code = _HTTP_ERRORS.get(
        exc.status_code, ("request refused", "invalid_request_error", "http_error")
    )
    headers = dict(exc.headers) if exc.headers else None
    return _error(exc.status_code, message, type_=type_, code=code, headers=headers)


async def _client_gone(request: Request, exc: Exception) -> Response:
    return Response(status_code=499)  # the caller left while sending; nobody reads this


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Starlette logs the traceback (exception type and frames; messages never carry prompt
    # text); the caller gets the OpenAI shape, not a plain-text 500.
    return _error(500, "internal error in the inference worker", type_="server_error")


# -- identity ---------------------------------------------------------------------------------


class ClientIdentityMiddleware:
    """Pure ASGI: refuse (403) any HTTP request whose TLS identity is not allowed."""

    def __init__(self, app: ASGIApp, *, allowed: frozenset[str]) -> None:
        self._app = app
        self._allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            identity = peer_identity(scope)
            if not isinstance(identity, Identity) or identity.spiffe_id not in self._allowed:
                who = identity.spiffe_id if isinstance(identity, Identity) else "no valid identity"
                logger.warning("worker refused caller: %s", who)
                response = _error(
                    403,
                    f"caller {who} may not use this worker; allowed: {sorted(self._allowed)}",
                    type_="permission_denied",
                    code="forbidden",
                )
                await response(scope, receive, send)
                return
        await self._app(scope, receive, send)


# -- routes -----------------------------------------------------------------------------------


def _check_media_type(request: Request) -> None:
    """Bodies are JSON (UTF-8) only: text/plain, forms and a missing type are 415."""
    media, _, params = request.headers.get("content-type", "").partition(";")
    charset = ""
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    if media.strip().lower() != "application/json" or charset not in ("", "utf-8", "utf8"):
        raise RequestError(
            "request body must be JSON: send Content-Type: application/json (UTF-8)",
            param="content-type",
            code="unsupported_media_type",
            status=415,
        )


def _too_large(limit: int) -> RequestError:
    return RequestError(
        f"request body exceeds {limit} bytes (server.max_body_bytes)",
        code="request_too_large",
        status=413,
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError("non-finite number")  # Infinity, -Infinity, NaN: not JSON (RFC 8259)


async def _read_json(request: Request, limit: int) -> Any:
    _check_media_type(request)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)  # refused before a byte of the body is read
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks), parse_constant=_refuse_constant)
    # ValueError: invalid JSON, bad UTF-8, an integer past Python's digit limit, non-finite
    # numbers; RecursionError: nesting deeper than the parser's stack.
    except (ValueError, RecursionError):
        raise RequestError("request body is not valid JSON", code="invalid_json") from None


def _check_utf8(texts: list[str], param: str) -> None:
    """A lone surrogate (``"\\ud800"``) is valid JSON but no text: refuse it by field."""
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(
                f"{param}: text contains a lone surrogate (not valid Unicode text)",
                param=param,
                code="invalid_request",
            ) from None


def _chat_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(encoded, dict) or hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return [int(i) for i in encoded]


def _text_ids(tokenizer: Any, text: str) -> list[int]:
    return [int(i) for i in tokenizer(text)["input_ids"]]


async def _generate(request: Request, *, chat: bool) -> Response:
    state: WorkerState = request.app.state.worker
    scheduler = state.ready_scheduler()
    body = await _read_json(request, state.config.server.max_body_bytes)
    try:
        parsed: ChatCompletionRequest | CompletionRequest = (
            ChatCompletionRequest.model_validate(body)
            if chat
            else CompletionRequest.model_validate(body)
        )
    except ValidationError as exc:
        message, param = format_validation_error(exc)
        raise RequestError(message, param=param, code="invalid_request") from None
    if parsed.model != state.model_name:
        return _error(
            404,
            f"the requested model is not served here; this worker serves {state.model_name!r}",
            type_="invalid_request_error",
            param="model",
            code="model_not_found",
        )
    _check_utf8(list(parsed.stop_strings()), "stop")
    if isinstance(parsed, ChatCompletionRequest):
        messages = [m.template_dict() for m in parsed.messages]
        _check_utf8([m["content"] for m in messages], "messages")
        prompt = await asyncio.to_thread(_chat_ids, state.tokenizer, messages)
        requested = parsed.requested_max_tokens
    else:
        _check_utf8([parsed.prompt_text], "prompt")
        prompt = await asyncio.to_thread(_text_ids, state.tokenizer, parsed.prompt_text)
        requested = parsed.max_tokens
    if not prompt:
        raise RequestError("the prompt is empty after tokenization", param="prompt")
    max_tokens = scheduler.max_tokens_for(len(prompt), requested)
    if parsed.min_tokens > max_tokens:
        raise RequestError(
            f"min_tokens is above max_tokens ({max_tokens})",
            param="min_tokens",
            code="invalid_request",
        )
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=parsed.temperature,
        top_p=parsed.top_p,
        stop=parsed.stop_strings(),
        seed=parsed.seed,
        ignore_eos=parsed.ignore_eos,
        min_tokens=parsed.min_tokens,
    )
    handle = scheduler.submit(prompt, params)
    shape = ResponseShape(
        chat=chat,
        response_id=("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex,
        model=state.model_name or parsed.model,
    )
    if parsed.stream:
        return StreamingResponse(
            _stream(handle, shape, include_usage=parsed.include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    return await _complete(request, handle, shape)


async def _stream(
    handle: RequestHandle, shape: ResponseShape, *, include_usage: bool
) -> AsyncIterator[bytes]:
    try:
        if shape.chat:
            yield sse(shape.chunk("", first=True))
        async for event in handle.events():
            if isinstance(event, TextDelta):
                yield sse(shape.chunk(event.text))
            elif isinstance(event, Finished):
                yield sse(shape.chunk(None if shape.chat else "", event.reason))
                if include_usage:
                    yield sse(shape.usage_chunk(event.prompt_tokens, event.completion_tokens))
            elif isinstance(event, Failed):
                yield sse(error_body(event.message, type_="server_error", code="engine_failed"))
        yield sse("[DONE]")
    finally:
        handle.cancel()  # no-op when finished; frees the slot when the client went away


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _complete(request: Request, handle: RequestHandle, shape: ResponseShape) -> Response:
    async def collect() -> Response:
        parts: list[str] = []
        async for event in handle.events():
            if isinstance(event, TextDelta):
                parts.append(event.text)
            elif isinstance(event, Finished):
                return JSONResponse(
                    shape.full(
                        "".join(parts), event.reason, event.prompt_tokens, event.completion_tokens
                    )
                )
            elif isinstance(event, Failed):
                return _error(500, event.message, type_="server_error", code="engine_failed")
        return _error(500, "generation ended without a result", type_="server_error")

    result = asyncio.ensure_future(collect())
    watcher = asyncio.ensure_future(_wait_disconnect(request.receive))
    try:
        await asyncio.wait({result, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (watcher, result):
            task.cancel()  # no-op for the one that finished
        handle.cancel()
        # cancel() only asks; wait until both have really ended before looking at the result
        # (result() on a task still unwinding raised InvalidStateError).
        await asyncio.gather(watcher, result, return_exceptions=True)
    if result.cancelled():
        return Response(status_code=499)  # client is gone; nobody reads this
    return result.result()


async def chat_completions(request: Request) -> Response:
    return await _generate(request, chat=True)


async def completions(request: Request) -> Response:
    return await _generate(request, chat=False)


async def models(request: Request) -> Response:
    state: WorkerState = request.app.state.worker
    state.ready_scheduler()
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {"id": state.model_name, "object": "model", "created": 0, "owned_by": "bastion"}
            ],
        }
    )


async def healthz(request: Request) -> Response:
    state: WorkerState = request.app.state.worker
    scheduler = state.scheduler
    if state.phase == "failed" or (scheduler is not None and scheduler.failure is not None):
        return JSONResponse({"status": "failed"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    state: WorkerState = request.app.state.worker
    try:
        state.ready_scheduler()
    except WorkerStoppedError:
        body: dict[str, Any] = {"status": state.phase}
        if state.failure is not None:
            body["reason"] = state.failure
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ready", "model": state.model_name})


async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    state: WorkerState = request.app.state.worker
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


_HANDLERS: dict[Any, Callable[[Request, Exception], Any]] = {
    InferenceError: _inference_error,
    HTTPException: _http_error,
    ClientDisconnect: _client_gone,
    Exception: _unexpected,
}

_OPS_ROUTES = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]


def create_app(
    config: WorkerConfig,
    *,
    before_ready: Callable[[], None] | None = None,
    state: WorkerState | None = None,
    span_processor: SpanProcessor | None = None,
) -> Starlette:
    """The worker app. Raises :class:`WorkerConfigError` for what this machine cannot run.

    ``before_ready`` runs on the boot thread after warm-up, before readiness (tests hold it to
    observe the not-ready window); ``state`` shares one boot with an ops app.
    """
    if state is None:
        import torch

        state = WorkerState(
            config, check_runtime(config.runtime, cuda_available=torch.cuda.is_available())
        )
    worker_state = state
    boot = threading.Thread(
        target=_boot, args=(worker_state, before_ready), name="bastion-worker-boot", daemon=True
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        boot.start()
        try:
            yield
        finally:
            scheduler = worker_state.scheduler
            if scheduler is not None:
                await asyncio.to_thread(scheduler.stop)

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        *_OPS_ROUTES,
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=_HANDLERS)
    app.state.worker = worker_state
    app.add_middleware(TracingMiddleware, tracer=build_tracer(config.tracing, span_processor))
    if config.server.tls is not None:
        return _with_identity(app, config.server.tls.allowed())
    return app


def _with_identity(app: Starlette, allowed: frozenset[str]) -> Starlette:
    app.add_middleware(ClientIdentityMiddleware, allowed=allowed)
    return app


def create_ops_app(state: WorkerState) -> Starlette:
    """Health, readiness and metrics only, for a plain-HTTP port that probes can reach."""
    app = Starlette(routes=list(_OPS_ROUTES), exception_handlers=_HANDLERS)
    app.state.worker = state
    return app
