"""Assemble the pluggable steps of the request path from the config.

Without a ``policy:`` section the gateway routes each model alias to its configured upstream
(:class:`StaticRouter`); with one, detection + the policy engine decide (``PolicyRouter``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from gateway.config import GatewayConfig
from gateway.metrics import GatewayMetrics
from gateway.pipeline import AuditSink, RequestContext, RoutedRequest, Router, Sanitizer
from gateway.policy.decision import Action, Decision
from gateway.upstreams.base import Upstream

__all__ = ["LogOnlyAudit", "StaticRouter", "build_request_path"]

logger = logging.getLogger("bastion.routing")

STATIC_POLICY_VERSION = "static"


class StaticRouter:
    """Alias → upstream from ``models:``; the route is the upstream's kind. No detection."""

    def __init__(self, config: GatewayConfig, upstreams: Mapping[str, Upstream]) -> None:
        self._config = config
        self._upstreams = upstreams

    async def route(self, ctx: RequestContext) -> RoutedRequest:
        name = self._config.models[ctx.model].upstream
        kind = self._upstreams[name].kind
        decision = Decision(
            action=Action.ONPREM if kind == "onprem" else Action.MANAGED,
            route=name,
            rule_id="static",
            policy_version=STATIC_POLICY_VERSION,
        )
        return RoutedRequest(decision=decision, upstream=name)


class LogOnlyAudit:
    """Decision ids and a structured log line, no durable trail: only when ``audit:`` is absent
    (development). The server logs a warning at startup when this is in use."""

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


def build_request_path(
    config: GatewayConfig, upstreams: Mapping[str, Upstream], metrics: GatewayMetrics
) -> tuple[Router, Sanitizer | None, AuditSink]:
    router: Router = StaticRouter(config, upstreams)
    sanitizer: Sanitizer | None = None
    audit: AuditSink = LogOnlyAudit()
    if config.audit is None:
        logger.warning(
            "no 'audit:' section: decisions are logged, not kept in a tamper-evident trail"
        )
    return router, sanitizer, audit
