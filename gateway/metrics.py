"""Gateway Prometheus metrics. One registry per app (tests build many apps in one process).

Labels carry identities, routes, rule ids and statuses — never text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["GatewayMetrics"]

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)


@dataclass
class GatewayMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "bastion_requests",
            "Requests by endpoint, route, action, status and identity.",
            ["endpoint", "route", "action", "status", "identity"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "bastion_request_duration_seconds",
            "End-to-end request latency at the gateway (to the last byte for streams).",
            ["endpoint", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.step_seconds = Histogram(
            "bastion_step_duration_seconds",
            "Latency of each request step (identify, authorize, detect, decide, audit, sanitize, forward, restore).",
            ["step"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tls_refused = Counter(
            "bastion_tls_refused_connections",
            "Connections refused at the TLS edge after the handshake, by reason.",
            ["reason"],
            registry=r,
        )
        self.tls_handshake_failures = Counter(
            "bastion_tls_handshake_failures",
            "TLS handshakes that failed, by the alert sent (unknown_ca, certificate_expired, "
            "protocol_version, certificate_required, ...) or received (peer:<alert>).",
            ["reason"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "bastion_upstream_errors",
            "Upstream failures by upstream and error class.",
            ["upstream", "error"],
            registry=r,
        )
        self.circuit_open = Gauge(
            "bastion_upstream_circuit_open",
            "1 while the upstream's circuit breaker is open or half-open.",
            ["upstream"],
            registry=r,
        )
        self.audit_failures = Counter(
            "bastion_audit_write_failures",
            "Audit records that could not be written durably (requests refused).",
            registry=r,
        )
        self.rate_limited = Counter(
            "bastion_rate_limited",
            "Requests refused by a per-identity rate limit.",
            ["identity"],
            registry=r,
        )
        self.detect_refused = Counter(
            "bastion_detect_refused",
            "Requests detection refused or gave up on (503 detector_busy), by reason: "
            "queue_full, identity_share, timeout, closed.",
            ["reason"],
            registry=r,
        )
        self.detect_restarts = Counter(
            "bastion_detect_worker_restarts",
            "Detection worker processes replaced, by reason: crashed, timeout.",
            ["reason"],
            registry=r,
        )
        self.detect_jobs = Gauge(
            "bastion_detect_jobs",
            "Detection jobs queued or running in the worker pool.",
            registry=r,
        )
        self.denials = Counter(
            "bastion_policy_denials",
            "Requests denied by policy, by rule.",
            ["rule"],
            registry=r,
        )
