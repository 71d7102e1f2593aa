"""The gateway's ASGI application: OpenAI-compatible endpoints over the request pipeline.

Endpoints (mTLS port): ``POST /v1/chat/completions``, ``POST /v1/completions``,
``GET /v1/models``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``, ``GET /openapi.json``.
The plain ops port (:func:`build_ops_app`) serves only the last four.

Response headers tell the caller what happened: ``x-bastion-route``, ``x-bastion-decision-id``
(the audit record id) and ``x-bastion-policy-version``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
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
    UpstreamError,
)
from gateway.metrics import GatewayMetrics
from gateway.pipeline import AuditSink, Router, handle_completion, identify
from gateway.ratelimit import RateLimiter
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


def _endpoint_handler(gateway: Gateway, endpoint: Endpoint) -> Any:
    async def handler(request: Request) -> Response:
        with gateway.telemetry.request_span(endpoint.path) as span:
            try:
                response = await handle_completion(gateway, request, endpoint)
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

    async def policy_shadow(request: Request) -> Response:
        # The shadow policy's differences, in `bastion policy replay --json`'s shape (issue 16).
        store = gateway.policy_store
        report = store.shadow_report() if store is not None else None
        if report is None:
            return JSONResponse({"status": "no shadow policy has decided a request"}, 404)
        return JSONResponse(report.to_json())

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/policy/shadow", policy_shadow, methods=["GET"]),
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
            if Endpoint.from_path(path) is not None:
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
        *(
            Route(endpoint.path, _endpoint_handler(gateway, endpoint), methods=["POST"])
            for endpoint in Endpoint
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
