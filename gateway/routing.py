"""Assemble the decision step of the request path from the config.

Without a ``policy:`` section the gateway routes each model alias to its configured upstream
(:class:`StaticRouter`, development and pure on-prem sites). With one, :class:`PolicyRouter` runs
detection over every text of the request (in a bounded thread pool), asks the policy engine,
and for managed routes sanitizes the body and scans the result again.

Sanitization happens here, before the write-ahead audit record, rather than after it as
DESIGN.md's first sketch had it: the re-scan can change the route (``on_error``), and the audit
record must name the route the request really takes. Nothing leaves before the record is
durable either way.

Fail closed: any error in detection, decision or sanitization gives the policy's ``on_error``
decision (on-prem or deny); no exception path reaches a managed upstream.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

from gateway.config import GatewayConfig
from gateway.detect import Detector, Finding, TextRef, extract_texts
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
from gateway.sanitize.restore import SSERestorer, restore_response_body
from gateway.sanitize.sanitizer import residual_findings, sanitize_body
from gateway.telemetry import Telemetry
from gateway.upstreams.base import Upstream
from pki.secret import Secret

__all__ = ["PolicyRouter", "PseudonymRestorer", "StaticRouter", "derive_key"]

logger = logging.getLogger("bastion.routing")

STATIC_POLICY_VERSION = "static"
T = TypeVar("T")


def derive_key(key: Secret, purpose: str) -> Secret:
    """A sub-key for one purpose (HMAC-SHA256 of the purpose), so one operator secret can key
    audit digests and sanitize hashes without the two being comparable."""
    digest = hmac.new(key.reveal().encode(), purpose.encode(), hashlib.sha256).hexdigest()
    return Secret(digest)


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


class PseudonymRestorer:
    """Restores one request's pseudonyms in a JSON answer or an SSE stream, holding back only a
    possible partial placeholder at a chunk boundary."""

    def __init__(self, sanitized: Any) -> None:
        self._pseudonyms = sanitized.pseudonyms
        self._stream = SSERestorer(self._pseudonyms)
        self._last: dict[str, Any] = {}

    def restore_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return restore_response_body(body, self._pseudonyms)

    def restore_event(self, event: dict[str, Any]) -> dict[str, Any]:
        self._last = {k: event[k] for k in ("id", "object", "created") if k in event}
        return self._stream.feed_chunk(event)

    def flush_event(self) -> dict[str, Any] | None:
        tails = self._stream.flush()
        if not any(tails.values()):
            return None
        return {
            **self._last,
            "choices": [
                {"index": index, "delta": {"content": text}, "finish_reason": None}
                for index, text in sorted(tails.items())
                if text
            ],
        }


class PolicyRouter:
    """Detection + policy decision + (managed) sanitization and re-scan."""

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
        self._hash_key = hash_key
        self._pool = ThreadPoolExecutor(
            max_workers=config.server.worker_threads, thread_name_prefix="bastion-detect"
        )
        self._slots = asyncio.Semaphore(config.limits.max_concurrent_detections)
        self._detectors: dict[str, Detector] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def warm_up(self) -> None:
        """Build the live policy's detector and run it once (loads spaCy): at startup, so the
        first request does not wait for it."""
        policy = self._store.current()
        if policy is None:
            return
        try:
            self._detector(policy).analyze([TextRef("warmup", "Warm up the analyzer, please.")])
        except Exception as exc:  # noqa: BLE001 - requests will fail closed; say so loudly now
            logger.error(
                "detector warm-up failed (%s): requests will fail closed", type(exc).__name__
            )

    def _detector(self, policy: Policy) -> Detector:
        with self._lock:
            detector = self._detectors.get(policy.version)
            if detector is None:
                detector = Detector(policy.detection)
                self._detectors = {policy.version: detector}  # keep only the live one
            return detector

    async def _blocking(self, fn: Callable[[], T]) -> T:
        """Run blocking work in the pool; 503 when it waits longer than detect_timeout_s."""
        timeout = self._config.limits.detect_timeout_s
        try:
            async with asyncio.timeout(timeout):
                async with self._slots:
                    return await asyncio.get_running_loop().run_in_executor(self._pool, fn)
        except TimeoutError:
            raise ServiceUnavailable(
                f"detection did not finish within {timeout} s (limits.detect_timeout_s); retry later",
                code="detector_busy",
                retry_after=1.0,
            ) from None

    async def _analyze(self, policy: Policy, texts: Sequence[TextRef]) -> list[Finding]:
        detector = await self._blocking(lambda: self._detector(policy))
        with self._telemetry.step("detect"):
            return await self._blocking(lambda: detector.analyze(texts))

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

    def _on_error(self, policy: Policy, rule_id: str, reason: str) -> Decision:
        self._metrics.upstream_errors.labels("detector", reason).inc()
        return fail_closed(policy, rule_id=rule_id, reason=reason)

    async def route(self, ctx: RequestContext) -> RoutedRequest:
        policy = self._store.current()
        if policy is None:
            return RoutedRequest(decision=deny_without_policy())
        texts = extract_texts(ctx.body)
        findings: tuple[Finding, ...] = ()
        try:
            findings = tuple(await self._analyze(policy, texts))
            facts = RequestFacts(
                identity=ctx.identity.spiffe_id,
                model=ctx.model,
                endpoint="/v1/" + ctx.endpoint.value,
                findings=findings,
                headers=ctx.headers,
            )
            with self._telemetry.step("decide"):
                decision, _shadow = self._store.shadow_compare(facts)
        except ServiceUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - fail closed on ANY detection/decision error
            logger.error("detection or decision failed (%s): failing closed", type(exc).__name__)
            decision = self._on_error(policy, "error:detect", type(exc).__name__)
        upstream, fallback = self._upstream_for(policy, decision)
        routed = RoutedRequest(
            decision=decision,
            findings=findings,
            upstream=upstream,
            fallback_upstream=fallback,
            texts=tuple(texts),
        )
        if decision.action is not Action.MANAGED:
            return routed
        return await self._sanitized(ctx, policy, routed)

    async def _sanitized(
        self, ctx: RequestContext, policy: Policy, routed: RoutedRequest
    ) -> RoutedRequest:
        try:
            with self._telemetry.step("sanitize"):
                result = sanitize_body(
                    ctx.body, routed.findings, routed.decision.operations, hash_key=self._hash_key
                )
            if not routed.findings and not result.replaced:
                # Detection found nothing at all and nothing was replaced: the body is the one
                # already scanned; scanning it again would find the same nothing.
                residual = []
            else:
                rescanned = extract_texts(result.body)
                again = await self._analyze(policy, rescanned)
                above = [f for f in again if f.score >= policy.threshold]
                residual = residual_findings(above, rescanned)
        except ServiceUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - fail closed on ANY sanitization error
            logger.error("sanitization failed (%s): failing closed", type(exc).__name__)
            decision = self._on_error(policy, "error:sanitize", type(exc).__name__)
            upstream, _ = self._upstream_for(policy, decision)
            return replace(routed, decision=decision, upstream=upstream, fallback_upstream=None)
        if residual:
            kinds = sorted({f.entity_type for f in residual})
            logger.warning(
                "sensitive data remained after sanitization (%s): failing closed", ",".join(kinds)
            )
            decision = self._on_error(policy, "error:residual", "residual")
            upstream, _ = self._upstream_for(policy, decision)
            return replace(routed, decision=decision, upstream=upstream, fallback_upstream=None)
        return replace(routed, outgoing=result.body, restorer=PseudonymRestorer(result))


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
