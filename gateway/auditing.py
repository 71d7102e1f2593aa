"""The request path's audit step: decision and outcome records into ``gateway.audit``.

Texts enter the trail only as keyed digests (HMAC under a sub-key of the operator's digest key),
never as text. Each decision record carries the decision's inputs (per entity type the count and
highest score; a keyed digest of each header the policy reads) so that ``bastion policy replay``
can re-decide it under a candidate policy. A decision record that cannot be made durable refuses
the request with 503 and nothing is forwarded; the trail's writer retries on the next request, so service resumes by
itself when the store is back.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from gateway.audit import (
    AuditError,
    AuditTrail,
    AuditUnavailable,
    DecisionInputs,
    DecisionRecord,
    OutcomeRecord,
    header_digest,
    text_digest,
)
from gateway.audit.capture import Part, PayloadSealer
from gateway.detect import extract_texts
from gateway.detect.findings import Finding
from gateway.errors import ServiceUnavailable
from gateway.metrics import GatewayMetrics
from gateway.pipeline import RequestContext, RoutedRequest
from gateway.policy import Policy
from pki.secret import Secret

__all__ = ["LogOnlyAudit", "TrailAudit", "decision_inputs"]

logger = logging.getLogger("bastion.audit")


def decision_inputs(
    findings: Sequence[Finding],
    headers: Mapping[str, str],
    header_names: Iterable[str],
    key: Secret,
    *,
    threshold: float | None = None,
) -> DecisionInputs:
    """The facts the policy decided on, as the trail keeps them (no text)."""
    stats: dict[str, tuple[int, float]] = {}
    for f in findings:
        count, best = stats.get(f.entity_type, (0, f.score))
        stats[f.entity_type] = (count + 1, max(best, f.score))
    kept: dict[str, str | None] = {}
    for name in sorted({n.lower() for n in header_names}):
        value = headers.get(name)
        kept[name] = None if value is None else header_digest(key, name, value)
    return DecisionInputs(entities=stats, headers=kept, threshold=threshold)


class TrailAudit:
    def __init__(
        self,
        trail: AuditTrail,
        digest_key: Secret,
        metrics: GatewayMetrics,
        *,
        sealer: PayloadSealer | None = None,
        policy_headers: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self._trail = trail
        # The header names the live (and shadow) policy read; their values are kept as digests.
        self._policy_headers = policy_headers or (lambda: ())
        self._key = digest_key
        self._metrics = metrics
        self._sealer = sealer
        self._key_written = False
        self._key_lock = asyncio.Lock()

    def record_headers_of(self, policy_headers: Callable[[], Iterable[str]]) -> None:
        """Keep digests of the headers ``policy_headers()`` names (those the policy reads)."""
        self._policy_headers = policy_headers

    async def _capture(self, decision_id: str, part: Part, payload: Mapping[str, Any]) -> None:
        """Payload capture (opt-in): the data key record once, then the sealed payload."""
        if self._sealer is None:
            return
        async with self._key_lock:
            if not self._key_written:
                await self._trail.append_payload("capkey", self._sealer.key_record())
                self._key_written = True
        sealed = self._sealer.seal(decision_id, part, payload)
        await self._trail.append_payload("payload", sealed.to_data())

    async def append_decision(self, ctx: RequestContext, routed: RoutedRequest) -> str:
        decision = routed.decision
        texts = routed.texts if routed.texts is not None else extract_texts(ctx.body)
        record = DecisionRecord(
            identity=ctx.identity.spiffe_id,
            client_addr=ctx.client_addr,
            endpoint=ctx.endpoint.path,
            model=ctx.model,
            request_id=ctx.request_id,
            entities=dict(Counter(f.entity_type for f in routed.findings)),
            rule_id=decision.rule_id,
            action=decision.action.value,
            route=decision.route,
            policy_version=decision.policy_version,
            operations={k: v.value for k, v in decision.operations.items()},
            upstream=routed.upstream,
            text_digests=tuple(text_digest(self._key, ref.text) for ref in texts),
            inputs=decision_inputs(
                routed.findings,
                ctx.headers,
                self._policy_headers(),
                self._key,
                threshold=routed.policy.threshold if isinstance(routed.policy, Policy) else None,
            ),
        )
        try:
            decision_id = await self._trail.append_decision(record)
            await self._capture(decision_id, "request", ctx.body)  # durable before forwarding too
            return decision_id
        except AuditError as exc:
            self._metrics.audit_failures.inc()
            logger.error(
                "audit decision record not durable (%s): request refused", type(exc).__name__
            )
            raise ServiceUnavailable(
                "the audit trail cannot record this request, so it is refused; retry shortly",
                code="audit_unavailable",
                retry_after=2.0,
            ) from None

    async def append_outcome(
        self,
        decision_id: str,
        *,
        status: int,
        latency_ms: float,
        upstream: str | None,
        usage: Mapping[str, Any] | None,
        error_class: str | None,
    ) -> None:
        def tokens(name: str) -> int | None:
            value = usage.get(name) if usage else None
            return value if isinstance(value, int) else None

        record = OutcomeRecord(
            decision_id=decision_id,
            status=status,
            latency_ms=latency_ms,
            upstream=upstream,
            prompt_tokens=tokens("prompt_tokens"),
            completion_tokens=tokens("completion_tokens"),
            error_class=error_class,
        )
        try:
            await self._trail.append_outcome(record)
        except (AuditUnavailable, AuditError) as exc:
            raise ServiceUnavailable(f"audit outcome not recorded ({type(exc).__name__})") from None

    async def capture_response(self, decision_id: str, body: Mapping[str, Any]) -> None:
        try:
            await self._capture(decision_id, "response", body)
        except AuditError as exc:
            self._metrics.audit_failures.inc()
            logger.error(
                "captured answer not recorded (%s): decision_id=%s", type(exc).__name__, decision_id
            )

    async def close(self) -> None:
        await self._trail.close()

    async def checkpoint(self) -> None:
        """Sign a checkpoint now (shutdown signs one before draining in-flight requests)."""
        try:
            await self._trail.checkpoint()
        except AuditError as exc:
            raise ServiceUnavailable(
                f"audit checkpoint not signed ({type(exc).__name__})"
            ) from None


class LogOnlyAudit:
    """Decision ids and a log line, no durable trail: only when ``audit:`` is absent
    (development without a trail). The server warns at startup when this is in use."""

    async def append_decision(self, ctx: RequestContext, routed: RoutedRequest) -> str:
        decision_id = uuid.uuid4().hex
        logger.info(
            "decision id=%s identity=%s model=%s rule=%s route=%s",
            decision_id,
            ctx.identity.spiffe_id,
            ctx.model,
            routed.decision.rule_id,
            routed.decision.route,
        )
        return decision_id

    async def append_outcome(self, decision_id: str, **fields: Any) -> None:
        logger.info("outcome id=%s status=%s", decision_id, fields.get("status"))

    async def capture_response(self, decision_id: str, body: Mapping[str, Any]) -> None:
        return None

    async def close(self) -> None:
        return None
