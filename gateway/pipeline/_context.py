"""The object that carries one call, and the interfaces the steps plug into."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.api.schemas import OpenAIRequest
from gateway.detect.findings import Finding, TextRef
from gateway.detect.texts import dump_request
from gateway.policy.decision import Decision
from gateway.upstreams.base import Endpoint
from pki.identity import Identity

__all__ = [
    "AuditSink",
    "NullRestorer",
    "RequestContext",
    "Restorer",
    "RoutedRequest",
    "Router",
]


@dataclass(frozen=True, slots=True)
class RoutedRequest:
    """The decision, with what detection found (types, offsets: no text). What the audit step
    reads: ``decision``, ``findings`` (entity_type, score), ``texts``, ``upstream``."""

    decision: Decision
    findings: tuple[Finding, ...] = ()
    upstream: str | None = None  # the upstream name the route resolves to
    fallback_upstream: str | None = None  # on-prem upstream if a managed one fails
    texts: tuple[TextRef, ...] | None = field(default=None, repr=False)  # as detection saw them
    policy: Any = field(default=None, repr=False)  # the gateway.policy.Policy that decided


@dataclass(eq=False)
class RequestContext:
    """One call from the wire to the upstream. The steps of :mod:`gateway.pipeline` fill it in
    order; nothing else carries state between them. Holds texts: never logged as a whole.

    What the audit step reads: ``identity``, ``model``, ``endpoint``, ``headers``,
    ``client_addr``, ``request_id`` and ``body`` (the caller's request as typed, for opt-in
    payload capture).
    """

    identity: Identity
    client_addr: str
    endpoint: Endpoint
    headers: Mapping[str, str] = field(repr=False)
    request: OpenAIRequest = field(repr=False)
    texts: tuple[TextRef, ...] = field(default=(), repr=False)  # extracted once, at parse
    binary: tuple[str, ...] = ()  # paths of image/audio/file data (not scannable)
    unscanned_binary: frozenset[str] = field(default=frozenset(), repr=False)  # too long to read
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.perf_counter)
    # Filled by the steps after parse:
    routed: RoutedRequest | None = None  # detect + decide (+ fail-closed rewrites)
    outgoing: dict[str, Any] | None = field(default=None, repr=False)  # managed: sanitized
    outgoing_bytes: bytes | None = field(default=None, repr=False)  # what the egress scan read
    restorer: Restorer | None = None
    decision_id: str | None = None
    _body: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def model(self) -> str:
        return self.request.model

    @property
    def stream(self) -> bool:
        return bool(self.request.stream)

    @property
    def body(self) -> dict[str, Any]:
        """The caller's request as a plain body, built from the typed request (cached)."""
        if self._body is None:
            self._body = dump_request(self.request)
        return self._body

    @property
    def text_chars(self) -> int:
        return sum(len(ref.text) for ref in self.texts)


class Router(Protocol):
    """Detection and decision for one call, plus what the gate steps need from the policy."""

    async def route(self, ctx: RequestContext) -> RoutedRequest:
        """Detect over ``ctx.texts`` and decide. May raise; the pipeline fails closed."""
        ...

    async def analyze(self, routed: RoutedRequest, texts: Sequence[TextRef]) -> list[Finding]:
        """Detection with the policy that made ``routed`` (the egress scan's detector)."""
        ...

    def fail_closed(self, routed: RoutedRequest | None, rule_id: str, reason: str) -> RoutedRequest:
        """``routed`` (None: not decided yet) re-decided as the policy's ``on_error`` (on-prem
        or deny), with no managed fallback."""
        ...

    def threshold(self, routed: RoutedRequest) -> float | None:
        """The policy's detection threshold; None: this router cannot gate a managed route."""
        ...

    @property
    def hash_key(self) -> Any:
        """The sanitize ``hash`` key (a ``pki.secret.Secret``) or None."""
        ...


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
