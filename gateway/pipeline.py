"""The request path as a chain of small steps with one shape:

    identify → parse → authorize → decide (detect + policy) → audit → sanitize → forward
    → restore → record

Each step is a plain function or a small object with a Protocol, testable alone. The decision
step (:class:`Router`), the audit trail (:class:`AuditSink`) and sanitization
(:class:`Sanitizer`) are pluggable: :mod:`gateway.routing` fills them with the policy engine,
detection and the tamper-evident audit store.

Fail closed: any error before the forward step means nothing is sent upstream; an audit write
failure refuses the request (503); a managed route is only ever reached with a body that went
through the sanitizer; on-prem failures never fall back to a managed route.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.requests import Request

from gateway.api.schemas import ChatCompletionRequest, CompletionRequest, parse_body
from gateway.config import LimitsConfig
from gateway.detect.findings import Finding, TextRef
from gateway.errors import (
    InvalidRequest,
    PayloadTooLarge,
    Unauthenticated,
    UpstreamError,
)
from gateway.policy.decision import Decision
from gateway.upstreams.base import Endpoint
from pki.asgi_tls import peer_identity
from pki.identity import Identity

__all__ = [
    "AuditSink",
    "NullRestorer",
    "RequestContext",
    "Restorer",
    "RoutedRequest",
    "Router",
    "identify",
    "read_json_body",
]


@dataclass(slots=True)
class RequestContext:
    """What the steps share about one request. Holds the body; never logged as a whole."""

    identity: Identity
    client_addr: str
    endpoint: Endpoint
    body: dict[str, Any] = field(repr=False)
    model: str
    stream: bool
    headers: Mapping[str, str] = field(repr=False)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True, slots=True)
class RoutedRequest:
    """The decision, with what detection found (types, offsets: no text)."""

    decision: Decision
    findings: tuple[Finding, ...] = ()
    upstream: str | None = None  # the upstream name the route resolves to
    fallback_upstream: str | None = None  # on-prem upstream if a managed one fails
    texts: tuple[TextRef, ...] | None = field(default=None, repr=False)  # as detection saw them
    outgoing: dict[str, Any] | None = field(default=None, repr=False)  # sanitized body (managed)
    restorer: Restorer | None = None  # restores pseudonyms in the answer (managed)


class Router(Protocol):
    async def route(self, ctx: RequestContext) -> RoutedRequest: ...


class Restorer(Protocol):
    """Turns pseudonyms in an answer back into the caller's values."""

    def restore_body(self, body: dict[str, Any]) -> dict[str, Any]: ...

    def restore_event(self, event: dict[str, Any]) -> dict[str, Any]: ...

    def flush_event(self) -> dict[str, Any] | None:
        """Whatever a stream held back (a possible partial placeholder) at its end."""
        ...


class AuditSink(Protocol):
    async def append_decision(self, ctx: RequestContext, routed: RoutedRequest) -> str:
        """Durably record the decision; return the record id. Raise ServiceUnavailable if not."""
        ...

    async def append_outcome(
        self,
        decision_id: str,
        *,
        status: int,
        latency_ms: float,
        upstream: str | None,
        usage: Mapping[str, Any] | None,
        error_class: str | None,
    ) -> None: ...

    async def capture_response(self, decision_id: str, body: Mapping[str, Any]) -> None:
        """Payload capture (opt-in) of a non-streamed answer; a no-op when capture is off."""
        ...

    async def close(self) -> None:
        """Flush and sign (the trail writes a checkpoint on close)."""
        ...


class NullRestorer:
    """For routes that were not sanitized (on-prem): the answer passes as it is."""

    def restore_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def restore_event(self, event: dict[str, Any]) -> dict[str, Any]:
        return event

    def flush_event(self) -> dict[str, Any] | None:
        return None


# -- steps --------------------------------------------------------------------------------


def identify(request: Request) -> Identity:
    verdict = peer_identity(request.scope)
    if isinstance(verdict, Identity):
        return verdict
    if isinstance(verdict, str):
        raise Unauthenticated(f"client certificate refused: {verdict}")
    raise Unauthenticated("a client certificate is required (mutual TLS)")


async def read_json_body(request: Request, limits: LimitsConfig) -> Any:
    """Read at most ``max_body_bytes`` (413 beyond) and decode JSON (400 if malformed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limits.max_body_bytes:
                raise PayloadTooLarge(
                    f"request body of {declared} bytes is over the limit of {limits.max_body_bytes} bytes"
                )
        except ValueError:
            raise InvalidRequest("content-length header is not a number") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise PayloadTooLarge(
                f"request body is over the limit of {limits.max_body_bytes} bytes"
            )
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise InvalidRequest("the request body is empty; send a JSON object")
    content_type = request.headers.get("content-type", "application/json")
    if "json" not in content_type:
        raise InvalidRequest(
            f"content-type must be application/json, not {content_type.split(';')[0]!r}"
        )
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = (
            f" at line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise InvalidRequest(f"the request body is not valid JSON{where}") from None


def texts_size(body: Any) -> int:
    """Characters in every string under ``messages`` and ``prompt`` (0 for a non-object body,
    which schema validation then refuses)."""
    if not isinstance(body, Mapping):
        return 0
    total = 0
    stack: list[Any] = [body.get("messages"), body.get("prompt")]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total


def parse_request(
    endpoint: Endpoint, body: Any, limits: LimitsConfig, *, text_chars: int
) -> ChatCompletionRequest | CompletionRequest:
    """Validate the body against its endpoint's schema and the named limits (``text_chars``:
    :func:`texts_size` of the body, computed once by the caller, which also uses it)."""
    parsed: ChatCompletionRequest | CompletionRequest
    if endpoint is Endpoint.CHAT:
        parsed = parse_body(ChatCompletionRequest, body)
        if len(parsed.messages) > limits.max_messages:
            raise InvalidRequest(
                f"too many messages: {len(parsed.messages)}; the limit is {limits.max_messages}",
                param="messages",
                code="too_many_messages",
            )
    else:
        parsed = parse_body(CompletionRequest, body)
    size = text_chars
    if size > limits.max_text_chars:
        raise InvalidRequest(
            f"the request's texts hold {size} characters; the limit is {limits.max_text_chars}",
            param="messages" if endpoint is Endpoint.CHAT else "prompt",
            code="context_too_long",
        )
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(parsed, name)
        if value is not None and value > limits.max_tokens:
            raise InvalidRequest(
                f"{name} is {value}; the limit is {limits.max_tokens}",
                param=name,
                code="max_tokens_too_large",
            )
    return parsed


async def stream_events(
    events: AsyncIterator[str], restorer: Restorer, model_alias: str
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Parse upstream SSE payloads, restore each, yield (payload, event) pairs to re-emit.

    The upstream's model name is replaced by the alias the caller asked for.
    """
    async for data in events:
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            raise UpstreamError("the upstream sent a malformed stream event") from None
        if not isinstance(event, dict):
            raise UpstreamError("the upstream sent a stream event that is not a JSON object")
        restored = restorer.restore_event(event)
        if "model" in restored:
            restored["model"] = model_alias
        yield json.dumps(restored, ensure_ascii=False, separators=(",", ":")), restored
    tail = restorer.flush_event()
    if tail is not None:
        tail["model"] = model_alias
        yield json.dumps(tail, ensure_ascii=False, separators=(",", ":")), tail
