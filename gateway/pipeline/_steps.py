"""The steps before forwarding, each a small function of the call (:class:`RequestContext`).

Fail-closed rules live here and only here:

1. detection or decision raises (anything but "detector busy") → the policy's ``on_error``;
2. a managed route and image/audio/file data (not scannable) → ``on_error``, unless the
   policy's route says ``binary: allow`` (then the egress scan skips exactly the binary
   values too long to read, and nothing else);
3. sanitizing raises, or the sanitized body no longer validates → ``on_error``;
4. the egress scan of the exact outgoing bytes finds anything at or above the threshold that is
   not Bastion's own token, or cannot run → ``on_error``;
5. a managed upstream only ever receives ``ctx.outgoing_bytes``, the bytes rule 4 scanned
   (made by the adapter's own ``encode``, so its wire shape and config fields are scanned
   too), and only after rule 4 passed (:func:`body_for`); a router that cannot gate (no
   policy) never reaches one.

``on_error`` is on-prem or deny, never managed, and carries no managed fallback.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from gateway.api.body import read_json_body
from gateway.api.schemas import ChatCompletionRequest, RequestSchemas
from gateway.api.validation import parse_body
from gateway.detect.findings import Finding
from gateway.detect.texts import dump_request, read_request
from gateway.errors import (
    InvalidRequest,
    ServiceUnavailable,
    Unauthenticated,
)
from gateway.pipeline._context import NullRestorer, RequestContext, Restorer, RoutedRequest
from gateway.policy.decision import Action
from gateway.policy.model import Policy
from gateway.sanitize.egress import egress_texts, long_numbers, mask_tokens, residual
from gateway.sanitize.restore import PseudonymRestorer
from gateway.sanitize.sanitizer import sanitize_body
from gateway.upstreams.base import Endpoint, Upstream
from pki.asgi_tls import peer_identity
from pki.identity import Identity

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = [
    "authorize",
    "body_for",
    "decide",
    "denied",
    "egress_scan",
    "fail_closed",
    "identify",
    "parse",
    "refuse_binary",
    "sanitize",
]

logger = logging.getLogger("bastion.pipeline")


def identify(request: Request) -> Identity:
    verdict = peer_identity(request.scope)
    if isinstance(verdict, Identity):
        return verdict
    if isinstance(verdict, str):
        raise Unauthenticated(f"client certificate refused: {verdict}")
    raise Unauthenticated("a client certificate is required (mutual TLS)")


@cache
def _schemas(passthrough_fields: tuple[str, ...]) -> RequestSchemas:
    return RequestSchemas(passthrough_fields)


async def parse(
    gateway: Gateway, request: Request, endpoint: Endpoint, identity: Identity
) -> RequestContext:
    """Read and bound the body, validate it against the endpoint's typed model, extract its
    texts once. Every failure is a 4xx, before any audit record."""
    limits = gateway.config.limits
    body = await read_json_body(request, limits)
    schemas = _schemas(tuple(getattr(limits, "passthrough_fields", ())))
    model = schemas.chat if endpoint is Endpoint.CHAT else schemas.completion
    typed = parse_body(model, body)
    if isinstance(typed, ChatCompletionRequest) and len(typed.messages) > limits.max_messages:
        raise InvalidRequest(
            f"too many messages: {len(typed.messages)}; the limit is {limits.max_messages} "
            "(limits.max_messages)",
            param="messages",
            code="too_many_messages",
        )
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(typed, name, None)
        if value is not None and value > limits.max_tokens:
            raise InvalidRequest(
                f"{name} is {value}; the limit is {limits.max_tokens} (limits.max_tokens)",
                param=name,
                code="max_tokens_too_large",
            )
    read = read_request(typed)
    ctx = RequestContext(
        identity=identity,
        client_addr=request.client.host if request.client else "",
        endpoint=endpoint,
        headers={k.lower(): v for k, v in request.headers.items()},
        request=typed,
        texts=read.texts,
        binary=read.binary,
        unscanned_binary=read.unscanned,
    )
    if ctx.text_chars > limits.max_text_chars:
        raise InvalidRequest(
            f"the request's texts hold {ctx.text_chars} characters; the limit is "
            f"{limits.max_text_chars} (limits.max_text_chars)",
            param="messages" if endpoint is Endpoint.CHAT else "prompt",
            code="context_too_long",
        )
    return ctx


def authorize(gateway: Gateway, ctx: RequestContext) -> None:
    gateway.authorizer.check(ctx.identity, ctx.model)


def fail_closed(
    gateway: Gateway, routed: RoutedRequest | None, rule_id: str, reason: str
) -> RoutedRequest:
    """The one way a call is re-routed after an error: the policy's ``on_error``."""
    gateway.metrics.upstream_errors.labels("detector", reason).inc()
    return gateway.router.fail_closed(routed, rule_id, reason)


async def decide(gateway: Gateway, ctx: RequestContext) -> RoutedRequest:
    """Detection over the call's texts and the policy decision (rule 1)."""
    try:
        return await gateway.router.route(ctx)
    except ServiceUnavailable:
        raise  # detector busy: 503, nothing recorded, nothing sent
    except Exception as exc:  # noqa: BLE001 - fail closed on ANY detection/decision error
        logger.error("detection or decision failed (%s): failing closed", type(exc).__name__)
        return fail_closed(gateway, None, "error:detect", type(exc).__name__)


def _managed(gateway: Gateway, routed: RoutedRequest) -> Upstream | None:
    upstream = gateway.upstreams.get(routed.upstream) if routed.upstream else None
    return upstream if upstream is not None and upstream.kind == "managed" else None


def binary_allowed(routed: RoutedRequest) -> bool:
    """True only when the policy that decided names the decided route with ``binary: allow``
    (anything else, no policy included, refuses)."""
    policy = routed.policy
    if not isinstance(policy, Policy) or routed.decision.route is None:
        return False
    route = policy.routes.get(routed.decision.route)
    return route is not None and route.allow_binary is True


def refuse_binary(gateway: Gateway, ctx: RequestContext, routed: RoutedRequest) -> RoutedRequest:
    """Rule 2: image, audio and file data cannot be scanned, so they never go managed, unless
    the route says ``binary: allow`` (the operator accepts that it leaves unscanned)."""
    if not ctx.binary or _managed(gateway, routed) is None or binary_allowed(routed):
        return routed
    logger.warning(
        "request holds %d image/audio/file part(s), which cannot be scanned: failing closed",
        len(ctx.binary),
    )
    return fail_closed(gateway, routed, "error:binary", "binary")


async def sanitize(gateway: Gateway, ctx: RequestContext, routed: RoutedRequest) -> RoutedRequest:
    """For a managed route: the outgoing body built from the sanitized typed request (rule 3),
    then the egress scan of its exact bytes (rule 4). Sets ``ctx.outgoing``/``ctx.restorer``
    only when both pass; otherwise returns the ``on_error`` decision."""
    upstream = _managed(gateway, routed)
    if upstream is None:
        return routed
    threshold = gateway.router.threshold(routed)
    if threshold is None:
        raise ServiceUnavailable("managed route without a sanitizing policy; refusing to forward")
    try:
        with gateway.telemetry.step("sanitize"):
            result = sanitize_body(
                ctx.request,
                routed.findings,
                routed.decision.operations,
                hash_key=gateway.router.hash_key,
                extracted=ctx.texts,
            )
            # Still a valid request under the same strict schema, then rebuilt from it.
            typed = parse_body(type(ctx.request), result.body)
            outgoing = dump_request(typed)
            outgoing["model"] = upstream.upstream_model(ctx.model)
        with gateway.telemetry.step("egress"):
            left = await egress_scan(
                gateway, ctx, routed, upstream, outgoing, result.tokens, threshold
            )
    except ServiceUnavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - fail closed on ANY sanitization/scan error
        logger.error("sanitization or egress scan failed (%s): failing closed", type(exc).__name__)
        return fail_closed(gateway, routed, "error:sanitize", type(exc).__name__)
    if left:
        kinds = sorted({f.entity_type for f in left})
        logger.warning(
            "sensitive data in the outgoing body after sanitization (%s): failing closed",
            ",".join(kinds),
        )
        return fail_closed(gateway, routed, "error:residual", "residual")
    ctx.outgoing = outgoing
    ctx.restorer = PseudonymRestorer(result)
    return routed


async def egress_scan(
    gateway: Gateway,
    ctx: RequestContext,
    routed: RoutedRequest,
    upstream: Upstream,
    outgoing: dict[str, Any],
    tokens: frozenset[str],
    threshold: float,
) -> list[Any]:
    """Rule 4: the exact bytes the adapter will send (``upstream.encode``: its own wire shape,
    config fields included; :func:`body_for` hands these same bytes to the adapter), every
    string in them read (no field list), Bastion's own tokens masked, detected; return what is
    at or above the threshold."""
    serialized = upstream.encode(ctx.endpoint, outgoing)
    above = {f.path for f in routed.findings if f.score >= threshold}
    known_clean = {ref.text for ref in ctx.texts if ref.path not in above}
    if binary_allowed(routed):
        known_clean |= ctx.unscanned_binary  # the route's policy accepts them unscanned
    texts = mask_tokens(egress_texts(serialized, known_clean=known_clean), tokens)
    ctx.outgoing_bytes = serialized
    numbers: list[Any] = [
        Finding("NUMERIC_IDENTIFIER", 1.0, path, 0, 0, "egress:long-number")
        for path in long_numbers(serialized)
    ]
    if not texts:
        return numbers
    findings = await gateway.router.analyze(routed, texts)
    return residual(findings, texts, threshold) + numbers


def body_for(
    ctx: RequestContext, upstream: Upstream
) -> tuple[dict[str, Any], bytes | None, Restorer]:
    """Rule 5: the body an upstream receives, and the exact bytes to send. Managed: only the
    scanned bytes (the adapter sends ``wire`` byte for byte); on-prem: the adapter encodes."""
    if upstream.kind != "onprem":
        if ctx.outgoing is None or ctx.outgoing_bytes is None or ctx.restorer is None:
            raise ServiceUnavailable("managed route without a scanned body; refusing to forward")
        return ctx.outgoing, ctx.outgoing_bytes, ctx.restorer
    body = dict(ctx.body)
    body["model"] = upstream.upstream_model(ctx.model)
    return body, None, NullRestorer()


def denied(routed: RoutedRequest) -> bool:
    return routed.decision.action is Action.DENY
