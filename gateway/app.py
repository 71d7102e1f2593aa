"""The gateway's ASGI application: OpenAI-compatible endpoints over the request pipeline.

Endpoints (mTLS port): ``POST /v1/chat/completions``, ``POST /v1/completions``,
``GET /v1/models``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``, ``GET /openapi.json``.
The plain ops port (:func:`build_ops_app`) serves only the last four.

Response headers tell the caller what happened: ``x-bastion-route``, ``x-bastion-decision-id``
(the audit record id) and ``x-bastion-policy-version``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import InitVar, dataclass, field
from typing import Any

from opentelemetry import trace
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.errors import error_response
from gateway.api.openapi import OPENAPI_DOCUMENT
from gateway.authz import Authorizer
from gateway.config import GatewayConfig
from gateway.errors import (
    GatewayError,
    MethodNotAllowed,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
)
from gateway.metrics import GatewayMetrics
from gateway.pipeline import (
    AuditSink,
    NullRestorer,
    RequestContext,
    Restorer,
    RoutedRequest,
    Router,
    identify,
    parse_request,
    read_json_body,
    stream_events,
    texts_size,
)
from gateway.policy.decision import Action, Decision
from gateway.ratelimit import RateLimiter, estimate_tokens
from gateway.telemetry import Telemetry, set_attributes
from gateway.upstreams.base import Endpoint, Upstream
from pki.asgi_tls import peer_identity
from pki.errors import BastionError
from pki.identity import Identity

__all__ = ["Gateway", "build_app", "build_ops_app"]

logger = logging.getLogger("bastion.gateway")
access_logger = logging.getLogger("bastion.access")


@dataclass
class Gateway:
    """Everything a request needs, built once at startup (``gateway.server.build_gateway``)."""

    config: GatewayConfig
    upstreams: Mapping[str, Upstream]
    router: Router
    audit: AuditSink
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    tracing: InitVar[Telemetry | None] = None  # default: tracing off, steps still timed
    telemetry: Telemetry = field(init=False)
    ready: bool = True
    policy_store: Any = None  # gateway.policy.PolicyStore when a policy is configured
    pending_outcomes: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self, tracing: Telemetry | None) -> None:
        self.limiter = RateLimiter(self.config.rate_limits)
        self.telemetry = tracing if tracing is not None else Telemetry(None, self.metrics)
        self.authorizer = Authorizer(self.config.authorization, self.config.models)

    def start(self) -> None:
        if self.policy_store is not None:
            self.policy_store.start()

    async def aclose(self) -> None:
        if self.policy_store is not None:
            self.policy_store.stop()
        close_router = getattr(self.router, "close", None)
        if close_router is not None:
            close_router()
        for upstream in self.upstreams.values():
            await upstream.aclose()
        if self.pending_outcomes:
            await asyncio.gather(*self.pending_outcomes)
        await self.audit.close()
        self.telemetry.shutdown()


def _decision_headers(routed: RoutedRequest, decision_id: str) -> dict[str, str]:
    return {
        "x-bastion-route": routed.decision.route or routed.decision.action.value,
        "x-bastion-decision-id": decision_id,
        "x-bastion-policy-version": routed.decision.policy_version,
    }


def _usage(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    usage = body.get("usage")
    return usage if isinstance(usage, Mapping) else None


async def _handle_completion(gateway: Gateway, request: Request, endpoint: Endpoint) -> Response:
    limits = gateway.config.limits
    with gateway.telemetry.step("identify"):
        identity = identify(request)
    body = await read_json_body(request, limits)
    size = texts_size(body)
    parsed = parse_request(endpoint, body, limits, text_chars=size)
    with gateway.telemetry.step("authorize"):
        gateway.authorizer.check(identity, parsed.model)
    ctx = RequestContext(
        identity=identity,
        client_addr=request.client.host if request.client else "",
        endpoint=endpoint,
        body=body,
        model=parsed.model,
        stream=parsed.stream,
        headers={k.lower(): v for k, v in request.headers.items()},
    )
    request.state.identity = identity.spiffe_id
    try:
        max_tokens = parsed.max_tokens or parsed.max_completion_tokens
        gateway.limiter.check(identity.spiffe_id, estimate_tokens(size, max_tokens))
    except RateLimited as limited:
        return await _refuse_rate_limited(gateway, ctx, limited)
    span = trace.get_current_span()
    set_attributes(span, {"bastion.identity": identity.spiffe_id, "bastion.model": parsed.model})
    routed = await gateway.router.route(ctx)
    counts = Counter(f.entity_type for f in routed.findings)
    set_attributes(
        span,
        {
            "bastion.route": routed.decision.route or routed.decision.action.value,
            "bastion.action": routed.decision.action.value,
            "bastion.rule_id": routed.decision.rule_id,
            "bastion.policy_version": routed.decision.policy_version,
            "bastion.entity_types": sorted(counts),
            "bastion.entity_count": sum(counts.values()),
            "bastion.upstream": routed.upstream,
        },
    )
    request.state.route = routed.decision.route or routed.decision.action.value
    request.state.action = routed.decision.action.value
    with gateway.telemetry.step("audit"):
        decision_id = await gateway.audit.append_decision(ctx, routed)
    headers = _decision_headers(routed, decision_id)
    set_attributes(span, {"bastion.decision_id": decision_id})
    if routed.decision.action is Action.DENY:
        gateway.metrics.denials.labels(routed.decision.rule_id).inc()
        exc = PermissionDenied(
            routed.decision.message
            or f"the request was denied by policy rule '{routed.decision.rule_id}'",
            code="policy_denied",
        )
        await _record_outcome(
            gateway, ctx, decision_id, exc.status_code, None, None, "policy_denied"
        )
        return error_response(exc, headers)
    if routed.upstream is None or routed.upstream not in gateway.upstreams:
        raise ServiceUnavailable(f"route '{routed.decision.route}' has no usable upstream")
    upstream = gateway.upstreams[routed.upstream]
    outgoing: dict[str, Any] = dict(body)
    restorer: Restorer = NullRestorer()
    if upstream.kind == "managed":
        # Fail closed: a managed upstream only ever receives a body the router sanitized.
        if routed.outgoing is None or routed.restorer is None:
            raise ServiceUnavailable("managed route without a sanitized body; refusing to forward")
        outgoing, restorer = dict(routed.outgoing), routed.restorer
    outgoing["model"] = upstream.upstream_model(parsed.model)
    try:
        return await _forward(
            gateway, ctx, upstream, endpoint, outgoing, restorer, decision_id, headers
        )
    except (UpstreamError, ServiceUnavailable) as exc:
        # A managed failure may fall back on-prem when the rule allows; the on-prem body is the
        # original (the worker is inside the perimeter). An on-prem failure never falls back.
        fallback = routed.fallback_upstream
        if upstream.kind != "managed" or fallback is None or fallback not in gateway.upstreams:
            return await _upstream_failure(gateway, ctx, decision_id, upstream.name, exc, headers)
        gateway.metrics.upstream_errors.labels(upstream.name, type(exc).__name__).inc()
        logger.warning(
            "managed upstream %s failed (%s): falling back on-prem to %s",
            upstream.name,
            type(exc).__name__,
            fallback,
        )
        onprem = gateway.upstreams[fallback]
        if onprem.kind != "onprem":
            raise ServiceUnavailable("fallback route is not on-prem; refusing") from None
        outgoing = dict(body)
        outgoing["model"] = onprem.upstream_model(parsed.model)
        headers = {
            **headers,
            "x-bastion-route": f"{headers['x-bastion-route']}->fallback:{fallback}",
        }
        try:
            return await _forward(
                gateway, ctx, onprem, endpoint, outgoing, NullRestorer(), decision_id, headers
            )
        except GatewayError as exc2:
            return await _upstream_failure(gateway, ctx, decision_id, onprem.name, exc2, headers)
    except GatewayError as exc:
        return await _upstream_failure(gateway, ctx, decision_id, upstream.name, exc, headers)


async def _upstream_failure(
    gateway: Gateway,
    ctx: RequestContext,
    decision_id: str,
    upstream: str,
    exc: GatewayError,
    headers: dict[str, str],
) -> Response:
    """Count the failure, record the outcome, answer OpenAI-shaped (before any byte was sent)."""
    gateway.metrics.upstream_errors.labels(upstream, type(exc).__name__).inc()
    await _record_outcome(
        gateway, ctx, decision_id, exc.status_code, upstream, None, type(exc).__name__
    )
    return error_response(exc, headers)


async def _refuse_rate_limited(gateway: Gateway, ctx: RequestContext, exc: RateLimited) -> Response:
    """429 with Retry-After, counted in metrics and recorded in the audit trail."""
    gateway.metrics.rate_limited.labels(ctx.identity.spiffe_id).inc()
    decision = Decision(action=Action.DENY, route=None, rule_id="rate-limit", policy_version="none")
    routed = RoutedRequest(decision=decision)
    decision_id = await gateway.audit.append_decision(ctx, routed)
    await _record_outcome(gateway, ctx, decision_id, 429, None, None, "RateLimited")
    return error_response(exc, _decision_headers(routed, decision_id))


async def _forward(
    gateway: Gateway,
    ctx: RequestContext,
    upstream: Upstream,
    endpoint: Endpoint,
    outgoing: dict[str, Any],
    restorer: Restorer,
    decision_id: str,
    headers: dict[str, str],
) -> Response:
    """Send to one upstream; upstream errors propagate (before any byte reached the caller)."""
    if ctx.stream:
        return await _forward_stream(
            gateway, ctx, upstream, endpoint, outgoing, restorer, decision_id, headers
        )
    with gateway.telemetry.step("forward"):
        reply = await upstream.complete(endpoint, outgoing)
    with gateway.telemetry.step("restore"):
        answer = restorer.restore_body(reply.body)
    answer["model"] = ctx.model
    await gateway.audit.capture_response(decision_id, answer)
    await _record_outcome(gateway, ctx, decision_id, 200, upstream.name, _usage(answer), None)
    return JSONResponse(answer, headers=headers)


async def _forward_stream(
    gateway: Gateway,
    ctx: RequestContext,
    upstream: Upstream,
    endpoint: Endpoint,
    outgoing: dict[str, Any],
    restorer: Restorer,
    decision_id: str,
    headers: dict[str, str],
) -> Response:
    stream = await upstream.stream(endpoint, outgoing)

    async def body() -> AsyncIterator[bytes]:
        status, error_class, usage = 200, None, None
        try:
            async for payload, event in stream_events(stream.events(), restorer, ctx.model):
                usage = _usage(event) or usage
                yield f"data: {payload}\n\n".encode()
            yield b"data: [DONE]\n\n"
        except GatewayError as exc:
            status, error_class = exc.status_code, type(exc).__name__
            gateway.metrics.upstream_errors.labels(upstream.name, error_class).inc()
            error = {
                "error": {
                    "message": exc.message,
                    "type": exc.error_type,
                    "param": None,
                    "code": exc.code,
                }
            }
            yield f"data: {json.dumps(error)}\n\n".encode()
        except BaseException:
            status, error_class = 499, "ClientDisconnected"
            raise
        finally:
            await stream.aclose()
            await _record_outcome(
                gateway, ctx, decision_id, status, upstream.name, usage, error_class
            )

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={**headers, "cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def _record_outcome(
    gateway: Gateway,
    ctx: RequestContext,
    decision_id: str,
    status: int,
    upstream: str | None,
    usage: Mapping[str, Any] | None,
    error_class: str | None,
) -> None:
    """Queue the outcome record without holding the answer back for its fsync: the decision
    record (written ahead) is what must be durable before bytes leave; the outcome follows in
    the trail's next group commit. Pending outcomes are awaited at shutdown."""
    latency_ms = (time.perf_counter() - ctx.started) * 1000

    async def write() -> None:
        try:
            await gateway.audit.append_outcome(
                decision_id,
                status=status,
                latency_ms=latency_ms,
                upstream=upstream,
                usage=usage,
                error_class=error_class,
            )
        except GatewayError:
            # The decision record is already durable; a lost outcome is counted and logged.
            gateway.metrics.audit_failures.inc()
            logger.error("audit outcome record could not be written: decision_id=%s", decision_id)

    task = asyncio.create_task(write())
    gateway.pending_outcomes.add(task)
    task.add_done_callback(gateway.pending_outcomes.discard)


def _endpoint_handler(gateway: Gateway, endpoint: Endpoint) -> Any:
    async def handler(request: Request) -> Response:
        with gateway.telemetry.request_span("/v1/" + endpoint.value) as span:
            try:
                response = await _handle_completion(gateway, request, endpoint)
            except GatewayError as exc:
                set_attributes(span, {"http.response.status_code": exc.status_code})
                raise
            set_attributes(span, {"http.response.status_code": response.status_code})
            return response

    return handler


def _models_handler(gateway: Gateway) -> Any:
    async def handler(request: Request) -> Response:
        identity = identify(request)
        gateway.authorizer.check_listing(identity)  # 403 to an identity no rule names
        created = 0
        data = [
            {"id": alias, "object": "model", "created": created, "owned_by": "bastion"}
            for alias in gateway.authorizer.allowed_models(identity)
        ]
        return JSONResponse({"object": "list", "data": data})

    return handler


def _ops_routes(gateway: Gateway) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if not gateway.ready:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics(request: Request) -> Response:
        for name, upstream in gateway.upstreams.items():
            gateway.metrics.circuit_open.labels(name).set(
                0 if upstream.circuit_state() == "closed" else 1
            )
        return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return JSONResponse(OPENAPI_DOCUMENT)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]


async def _http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's 404/405 in the OpenAI shape. The message names the route template, never
    the path the caller sent (a path can carry an identifier: issue 14)."""
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow", "")
        route = _route_template(request.scope)
        return error_response(
            MethodNotAllowed(
                f"this method is not allowed on {route}; use {allow}"
                if allow
                else "this method is not allowed here"
            ),
            {"allow": allow} if allow else None,
        )
    if isinstance(exc, HTTPException) and exc.status_code == 404:
        return error_response(
            NotFound(
                "no such endpoint; the API serves /v1/chat/completions, /v1/completions "
                "and /v1/models"
            )
        )
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    return error_response(GatewayError(f"HTTP {status}"))


def _route_template(scope: Scope) -> str:
    """The template of the route that matched (``/v1/chat/completions``), or "-": what logs
    and metrics may name. The raw path is the caller's and is never written."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "-"


async def _gateway_exception(request: Request, exc: Exception) -> Response:
    """Any Bastion error reaching the boundary: OpenAI-shaped, status from the one table
    (``gateway.api.errors.BOUNDARY``), never the domain message."""
    if not isinstance(exc, BastionError):  # pragma: no cover - registered for BastionError only
        raise exc
    if isinstance(exc, UpstreamError):
        logger.warning("upstream error: %s", exc.message)
    elif not isinstance(exc, GatewayError):  # a domain error: the caller gets a generic message
        logger.error("%s reached the HTTP boundary: %s", type(exc).__name__, exc)
    return error_response(exc)


class AccessLog:
    """Pure ASGI middleware: one line per request with identity, route, status, latency.

    The path is written as the matched route's template ("-" when none matched), never as
    sent; never the body, never the query string. Pure ASGI (not ``BaseHTTPMiddleware``) keeps
    contextvars and streaming intact.
    """

    def __init__(self, app: ASGIApp, gateway: Gateway, enabled: bool) -> None:
        self.app = app
        self.gateway = gateway
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        route = "-"

        async def wrapped(message: Message) -> None:
            nonlocal status, route
            if message["type"] == "http.response.start":
                status = message["status"]
                for key, value in message.get("headers", []):
                    if key == b"x-bastion-route":
                        route = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            elapsed = time.perf_counter() - start
            path = _route_template(scope)  # never the raw path: it is the caller's data
            verdict = peer_identity(scope)
            who = verdict.spiffe_id if isinstance(verdict, Identity) else "-"
            if path in ("/v1/chat/completions", "/v1/completions"):
                state = scope.get("state") or {}
                self.gateway.metrics.requests.labels(
                    path, route, str(state.get("action", "-")), str(status), who
                ).inc()
                self.gateway.metrics.request_seconds.labels(path, route).observe(elapsed)
            if self.enabled:
                access_logger.info(
                    "%s %s %s identity=%s route=%s status=%d latency_ms=%.1f",
                    scope.get("client", ("-",))[0] if scope.get("client") else "-",
                    scope["method"],
                    path,
                    who,
                    route,
                    status,
                    elapsed * 1000,
                )


def build_app(gateway: Gateway) -> ASGIApp:
    routes = [
        Route("/v1/chat/completions", _endpoint_handler(gateway, Endpoint.CHAT), methods=["POST"]),
        Route(
            "/v1/completions", _endpoint_handler(gateway, Endpoint.COMPLETIONS), methods=["POST"]
        ),
        Route("/v1/models", _models_handler(gateway), methods=["GET"]),
        *_ops_routes(gateway),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_exception, BastionError: _gateway_exception},
    )
    return AccessLog(app, gateway, enabled=gateway.config.server.access_log)


def build_ops_app(gateway: Gateway) -> ASGIApp:
    app = Starlette(
        routes=_ops_routes(gateway), exception_handlers={HTTPException: _http_exception}
    )
    return app
