"""Assemble the decision step of the request path from the config.

Without a ``policy:`` section the gateway routes each model alias to its configured upstream
(:class:`StaticRouter`, development and pure on-prem sites). With one, :class:`PolicyRouter` runs
detection over every text of the request (in the detection process pool,
:mod:`gateway.detect.pool`, with a fair share per identity) and asks the policy engine.

The routers only detect and decide. Sanitizing, the egress scan and every fail-closed rule are
steps of :mod:`gateway.pipeline`, which calls back here for the policy's ``on_error`` decision
(:meth:`PolicyRouter.fail_closed`), its threshold and its detector (:meth:`PolicyRouter.analyze`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping, Sequence
from contextvars import ContextVar

from gateway.config import GatewayConfig
from gateway.detect import Finding, TextRef
from gateway.detect.pool import DetectionPool, default_processes
from gateway.errors import ServiceUnavailable
from gateway.metrics import GatewayMetrics
from gateway.pipeline import RequestContext, RoutedRequest, Router
from gateway.policy import (
    Action,
    Decision,
    Policy,
    PolicyStore,
    RequestFacts,
    deny_without_policy,
    fail_closed,
)
from gateway.sanitize.restore import PseudonymRestorer
from gateway.telemetry import Telemetry
from gateway.upstreams.base import Upstream
from pki.secret import Secret

__all__ = ["PolicyRouter", "PseudonymRestorer", "StaticRouter", "derive_key"]

logger = logging.getLogger("bastion.routing")

STATIC_POLICY_VERSION = "static"
# The caller whose request this task serves: detection's fair share is per identity, and the
# egress scan (PolicyRouter.analyze) runs later in the same request task.
_IDENTITY: ContextVar[str] = ContextVar("bastion_detect_identity", default="-")


def derive_key(key: Secret, purpose: str) -> Secret:
    """A sub-key for one purpose (HMAC-SHA256 of the purpose), so one operator secret can key
    audit digests and sanitize hashes without the two being comparable."""
    digest = hmac.new(key.reveal().encode(), purpose.encode(), hashlib.sha256).hexdigest()
    return Secret(digest)


class StaticRouter:
    """Alias → upstream from ``models:``; the route is the upstream's kind. No detection, so it
    cannot gate a managed route (the pipeline refuses one: :meth:`threshold` is None)."""

    hash_key: Secret | None = None

    def __init__(self, config: GatewayConfig, upstreams: Mapping[str, Upstream]) -> None:
        self._config = config
        self._upstreams = upstreams

    async def route(self, ctx: RequestContext) -> RoutedRequest:
        name = self._config.models[ctx.model].upstream
        kind = self._upstreams[name].kind
        decision = Decision(
            action=Action(kind),
            route=name,
            rule_id="static",
            policy_version=STATIC_POLICY_VERSION,
        )
        return RoutedRequest(decision=decision, upstream=name, texts=ctx.texts)

    async def analyze(self, routed: RoutedRequest, texts: Sequence[TextRef]) -> list[Finding]:
        raise ServiceUnavailable("no policy is configured, so nothing can be scanned")

    def fail_closed(self, routed: RoutedRequest | None, rule_id: str, reason: str) -> RoutedRequest:
        decision = Decision(
            action=Action.DENY,
            route=None,
            rule_id=rule_id,
            policy_version=STATIC_POLICY_VERSION,
            message="the request could not be checked, so it is refused",
        )
        texts = routed.texts if routed is not None else None
        return RoutedRequest(decision=decision, texts=texts)

    def threshold(self, routed: RoutedRequest) -> float | None:
        return None


class PolicyRouter:
    """Detection (one method, :meth:`analyze`, in a bounded pool) + the policy decision."""

    def __init__(
        self,
        config: GatewayConfig,
        upstreams: Mapping[str, Upstream],
        store: PolicyStore,
        metrics: GatewayMetrics,
        *,
        hash_key: Secret | None,
        telemetry: Telemetry,
    ) -> None:
        self._telemetry = telemetry
        self._config = config
        self._upstreams = upstreams
        self._store = store
        self._metrics = metrics
        self.hash_key = hash_key
        limits = config.limits
        self._pool = DetectionPool(
            processes=limits.detect_processes or default_processes(),
            timeout_s=limits.detect_timeout_s,
            max_jobs=limits.max_concurrent_detections,
            identity_max_chars=limits.detect_identity_max_chars,
            on_refused=lambda reason: metrics.detect_refused.labels(reason).inc(),
            on_restart=lambda reason: metrics.detect_restarts.labels(reason).inc(),
        )
        metrics.detect_jobs.set_function(self._pool.depth)

    def close(self) -> None:
        self._pool.close()

    def warm_up(self) -> None:
        """Start the detection processes, each with the live policy's detector run once
        (spaCy loaded): at startup, so the first request does not wait for it. A spec that
        cannot be built is logged by the pool; its requests fail closed."""
        policy = self._store.current()
        if policy is None:
            self._pool.start()
        else:
            self._pool.start(policy.version, policy.detection)

    async def _detect(self, policy: Policy, texts: Sequence[TextRef]) -> list[Finding]:
        """The one place detection runs: in the process pool, under the caller's fair share
        (503 detector_busy when refused or late, an error when a worker failed)."""
        with self._telemetry.step("detect"):
            return await self._pool.analyze(
                _IDENTITY.get(), policy.version, policy.detection, texts
            )

    def _policy(self, routed: RoutedRequest | None) -> Policy | None:
        if routed is not None and routed.policy is not None:
            policy: Policy = routed.policy
            return policy
        return self._store.current()

    def _upstream_for(self, policy: Policy, decision: Decision) -> tuple[str | None, str | None]:
        if decision.route is None:
            return None, None
        route = policy.routes.get(decision.route)
        if route is None:
            return None, None
        fallback = None
        if decision.fallback_route is not None and decision.fallback_route in policy.routes:
            fallback = policy.routes[decision.fallback_route].upstream
        return route.upstream, fallback

    async def route(self, ctx: RequestContext) -> RoutedRequest:
        """Detect over the call's texts and decide; errors propagate (the pipeline fails closed)."""
        policy = self._store.current()
        if policy is None:
            return RoutedRequest(decision=deny_without_policy(), texts=ctx.texts)
        _IDENTITY.set(ctx.identity.spiffe_id)
        findings = tuple(await self._detect(policy, ctx.texts))
        facts = RequestFacts(
            identity=ctx.identity.spiffe_id,
            model=ctx.model,
            endpoint=ctx.endpoint.path,
            findings=findings,
            headers=ctx.headers,
        )
        with self._telemetry.step("decide"):
            decision, _shadow = self._store.shadow_compare(facts)
        upstream, fallback = self._upstream_for(policy, decision)
        return RoutedRequest(
            decision=decision,
            findings=findings,
            upstream=upstream,
            fallback_upstream=fallback,
            texts=ctx.texts,
            policy=policy,
        )

    async def analyze(self, routed: RoutedRequest, texts: Sequence[TextRef]) -> list[Finding]:
        policy = self._policy(routed)
        if policy is None:
            raise ServiceUnavailable("no policy is loaded, so nothing can be scanned")
        return await self._detect(policy, texts)

    def fail_closed(self, routed: RoutedRequest | None, rule_id: str, reason: str) -> RoutedRequest:
        policy = self._policy(routed)
        texts = routed.texts if routed is not None else None
        findings = routed.findings if routed is not None else ()
        if policy is None:
            return RoutedRequest(decision=deny_without_policy(), findings=findings, texts=texts)
        decision = fail_closed(policy, rule_id=rule_id, reason=reason)
        upstream, _ = self._upstream_for(policy, decision)
        return RoutedRequest(
            decision=decision, findings=findings, upstream=upstream, texts=texts, policy=policy
        )

    def threshold(self, routed: RoutedRequest) -> float | None:
        policy = self._policy(routed)
        return None if policy is None else float(policy.threshold)


def build_router(
    config: GatewayConfig,
    upstreams: Mapping[str, Upstream],
    metrics: GatewayMetrics,
    *,
    hash_key: Secret | None,
    telemetry: Telemetry,
) -> tuple[Router, PolicyStore | None]:
    if config.policy is None:
        return StaticRouter(config, upstreams), None
    store = PolicyStore(
        config.policy.file,
        shadow_path=config.policy.shadow,
        poll_interval=config.policy.reload_interval_s,
        registry=metrics.registry,
    )
    store.reload(force=True)
    if store.current() is None:
        logger.error(
            "policy %s did not load (%s): every request is denied until it does",
            config.policy.file,
            store.last_error,
        )
    _check_policy_upstreams(store.current(), upstreams)
    router = PolicyRouter(config, upstreams, store, metrics, hash_key=hash_key, telemetry=telemetry)
    router.warm_up()
    return router, store


def _check_policy_upstreams(policy: Policy | None, upstreams: Mapping[str, Upstream]) -> None:
    if policy is None:
        return
    from gateway.errors import ConfigError

    for route in policy.routes.values():
        upstream = upstreams.get(route.upstream)
        if upstream is None:
            raise ConfigError(
                f"policy {policy.source}: route '{route.name}' names upstream '{route.upstream}', "
                f"which the gateway config does not define (known: {', '.join(sorted(upstreams))})"
            )
        if upstream.kind != route.kind.value:
            raise ConfigError(
                f"policy {policy.source}: route '{route.name}' is {route.kind.value} but upstream "
                f"'{route.upstream}' is {upstream.kind}"
            )
