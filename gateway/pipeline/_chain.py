"""The request path of a completion call, in order, in one function."""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING

from opentelemetry import trace
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.errors import error_response
from gateway.errors import (
    GatewayError,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
)
from gateway.pipeline import _steps as steps
from gateway.pipeline._context import NullRestorer, RequestContext, RoutedRequest
from gateway.pipeline._forward import forward, record_outcome, upstream_failure
from gateway.policy.decision import Action, Decision
from gateway.ratelimit import estimate_tokens
from gateway.telemetry import set_attributes
from gateway.upstreams.base import Endpoint

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["handle_completion"]

logger = logging.getLogger("bastion.gateway")


def _decision_headers(routed: RoutedRequest, decision_id: str) -> dict[str, str]:
    return {
        "x-bastion-route": routed.decision.route or routed.decision.action.value,
        "x-bastion-decision-id": decision_id,
        "x-bastion-policy-version": routed.decision.policy_version,
    }


async def handle_completion(gateway: Gateway, request: Request, endpoint: Endpoint) -> Response:
    """identify → parse → authorize → rate-limit → detect + decide → refuse binary → sanitize +
    egress scan → audit (write-ahead) → deny | forward (→ on-prem fallback) → restore → record."""
    with gateway.telemetry.step("identify"):
        identity = steps.identify(request)
    ctx = await steps.parse(gateway, request, endpoint, identity)
    with gateway.telemetry.step("authorize"):
        steps.authorize(gateway, ctx)
    request.state.identity = identity.spiffe_id
    try:
        max_tokens = getattr(ctx.request, "max_completion_tokens", None) or ctx.request.max_tokens
        gateway.limiter.check(identity.spiffe_id, estimate_tokens(ctx.text_chars, max_tokens))
    except RateLimited as limited:
        return await _refuse_rate_limited(gateway, ctx, limited)
    span = trace.get_current_span()
    set_attributes(span, {"bastion.identity": identity.spiffe_id, "bastion.model": ctx.model})
    routed = await steps.decide(gateway, ctx)
    routed = steps.refuse_binary(gateway, ctx, routed)
    routed = await steps.sanitize(gateway, ctx, routed)
    ctx.routed = routed
    _annotate(span, request, routed)
    with gateway.telemetry.step("audit"):
        ctx.decision_id = await gateway.audit.append_decision(ctx, routed)
    headers = _decision_headers(routed, ctx.decision_id)
    set_attributes(span, {"bastion.decision_id": ctx.decision_id})
    if steps.denied(routed):
        return _refuse_denied(gateway, ctx, routed, headers)
    return await _send(gateway, ctx, routed, headers)


def _annotate(span: trace.Span, request: Request, routed: RoutedRequest) -> None:
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


def _refuse_denied(
    gateway: Gateway, ctx: RequestContext, routed: RoutedRequest, headers: dict[str, str]
) -> Response:
    gateway.metrics.denials.labels(routed.decision.rule_id).inc()
    exc = PermissionDenied(
        routed.decision.message
        or f"the request was denied by policy rule '{routed.decision.rule_id}'",
        code="policy_denied",
    )
    record_outcome(gateway, ctx, exc.status_code, None, None, "policy_denied")
    return error_response(exc, headers)


async def _refuse_rate_limited(gateway: Gateway, ctx: RequestContext, exc: RateLimited) -> Response:
    """429 with Retry-After, counted in metrics and recorded in the audit trail."""
    gateway.metrics.rate_limited.labels(ctx.identity.spiffe_id).inc()
    decision = Decision(action=Action.DENY, route=None, rule_id="rate-limit", policy_version="none")
    routed = RoutedRequest(decision=decision, texts=ctx.texts)
    ctx.routed = routed
    ctx.decision_id = await gateway.audit.append_decision(ctx, routed)
    record_outcome(gateway, ctx, 429, None, None, "RateLimited")
    return error_response(exc, _decision_headers(routed, ctx.decision_id))


async def _send(
    gateway: Gateway, ctx: RequestContext, routed: RoutedRequest, headers: dict[str, str]
) -> Response:
    """Forward to the decided upstream; a managed failure before the first byte may fall back
    on-prem when the rule allows (with the original body: the worker is inside the perimeter).
    An on-prem failure never falls back."""
    if routed.upstream is None or routed.upstream not in gateway.upstreams:
        raise ServiceUnavailable(f"route '{routed.decision.route}' has no usable upstream")
    upstream = gateway.upstreams[routed.upstream]
    outgoing, wire, restorer = steps.body_for(ctx, upstream)
    try:
        return await forward(gateway, ctx, upstream, outgoing, wire, restorer, headers)
    except (UpstreamError, ServiceUnavailable) as exc:
        fallback = routed.fallback_upstream
        if upstream.kind != "managed" or fallback is None or fallback not in gateway.upstreams:
            return await upstream_failure(gateway, ctx, upstream.name, exc, headers)
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
        body, onprem_wire, _ = steps.body_for(ctx, onprem)
        headers = {
            **headers,
            "x-bastion-route": f"{headers['x-bastion-route']}->fallback:{fallback}",
        }
        try:
            return await forward(gateway, ctx, onprem, body, onprem_wire, NullRestorer(), headers)
        except GatewayError as exc2:
            return await upstream_failure(gateway, ctx, onprem.name, exc2, headers)
    except GatewayError as exc:
        return await upstream_failure(gateway, ctx, upstream.name, exc, headers)
