"""Tracing for the request path: one span per request, a child span per step.

Attributes are limited to identity, route, rule id, policy version, entity types and counts,
status and token counts — never text (:data:`ALLOWED_ATTRIBUTES` is enforced, not advisory).
The span *status* is covered too: spans never set their status from an exception (whose message
could hold a caller's value, issue 14) and carry a status code only, never a description; every
span processor sees spans through :class:`_AllowListed`, which drops any attribute outside the
allow-list, any event (exception events hold messages) and any status description, so a
forgotten call site cannot leak text to an exporter.
Each gateway owns its ``TracerProvider`` (no global state, so tests attach an in-memory
exporter). With ``exporter: none`` (the default) the tracer is OpenTelemetry's no-op tracer and
a step costs one histogram observation.

The W3C ``traceparent`` of the request span is sent to on-prem upstreams so one trace shows the
gateway and the worker; it is never sent to managed APIs (trace ids are internal data).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Status, StatusCode
from pydantic import BaseModel, ConfigDict

from gateway.metrics import GatewayMetrics

__all__ = ["ALLOWED_ATTRIBUTES", "Telemetry", "TracingConfig", "traceparent_headers"]

ALLOWED_ATTRIBUTES = frozenset(
    {
        "bastion.identity",
        "bastion.endpoint",
        "bastion.model",
        "bastion.route",
        "bastion.action",
        "bastion.rule_id",
        "bastion.policy_version",
        "bastion.entity_types",
        "bastion.entity_count",
        "bastion.upstream",
        "bastion.decision_id",
        "http.response.status_code",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
    }
)


class TracingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    exporter: Literal["none", "console", "otlp"] = "none"
    endpoint: str | None = (
        None  # OTLP/HTTP traces endpoint, e.g. http://otel-collector:4318/v1/traces
    )
    service_name: str = "bastion-gateway"
    sample_ratio: float = 1.0


class Telemetry:
    def __init__(
        self,
        config: TracingConfig | None,
        metrics: GatewayMetrics,
        *,
        extra_processor: SpanProcessor | None = None,
    ) -> None:
        self.metrics = metrics
        self._step_children: dict[str, Any] = {}  # step name -> its histogram child
        config = config or TracingConfig()
        self.enabled = config.exporter != "none" or extra_processor is not None
        self._provider: TracerProvider | None = None
        if self.enabled:
            from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

            provider = TracerProvider(
                resource=Resource.create({"service.name": config.service_name}),
                sampler=ParentBasedTraceIdRatio(config.sample_ratio),
            )
            exporter: SpanExporter | None = None
            if config.exporter == "console":
                exporter = ConsoleSpanExporter()
            elif config.exporter == "otlp":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                exporter = (
                    OTLPSpanExporter(endpoint=config.endpoint)
                    if config.endpoint
                    else OTLPSpanExporter()
                )
            if exporter is not None:
                provider.add_span_processor(_AllowListed(BatchSpanProcessor(exporter)))
            if extra_processor is not None:
                provider.add_span_processor(_AllowListed(extra_processor))
            self._provider = provider
            self.tracer: trace.Tracer = provider.get_tracer("bastion.gateway")
        else:
            self.tracer = trace.NoOpTracer()

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()

    @contextmanager
    def request_span(self, endpoint: str) -> Iterator[trace.Span]:
        # record_exception=False and set_status_on_exception=False: an exception's message
        # (which may quote what the caller sent) never reaches the span; _ended_by sets the
        # status from the error's HTTP status alone.
        if not self.enabled:
            # Tracing off: the same non-recording span NoOpTracer gives, without entering and
            # leaving an OpenTelemetry context (issue 17: ~10 us per span on the request path).
            yield trace.INVALID_SPAN
            return
        with self.tracer.start_as_current_span(
            "bastion.request",
            kind=trace.SpanKind.SERVER,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            set_attributes(span, {"bastion.endpoint": endpoint})
            try:
                yield span
            except BaseException as exc:
                _ended_by(span, exc)
                raise

    @contextmanager
    def step(self, name: str) -> Iterator[trace.Span]:
        """A child span and a latency observation for one step of the request path."""
        start = time.perf_counter()
        try:
            if not self.enabled:  # tracing off: time the step only (see request_span)
                yield trace.INVALID_SPAN
                return
            with self.tracer.start_as_current_span(
                f"bastion.{name}", record_exception=False, set_status_on_exception=False
            ) as span:
                try:
                    yield span
                except BaseException as exc:
                    _ended_by(span, exc)
                    raise
        finally:
            child = self._step_children.get(name)
            if child is None:  # step names are the code's own: a small fixed set
                child = self._step_children[name] = self.metrics.step_seconds.labels(name)
            child.observe(time.perf_counter() - start)


def _ended_by(span: trace.Span, exc: BaseException) -> None:
    """Status for a span ended by ``exc``: ERROR for a server-side failure (5xx, or anything that
    is not an HTTP error), unset for a refusal the caller caused (4xx), as OpenTelemetry's HTTP
    conventions say for server spans. Never a description."""
    status = getattr(exc, "status_code", 500)
    if not isinstance(status, int) or status >= 500:
        span.set_status(Status(StatusCode.ERROR))


class _AllowListed(SpanProcessor):
    """Hands ``inner`` a copy of each ended span holding only what may leave the process:
    allow-listed attributes, the status code without description, no events."""

    def __init__(self, inner: SpanProcessor) -> None:
        self._inner = inner

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._inner.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        attributes = {
            key: value
            for key, value in (span.attributes or {}).items()
            if key in ALLOWED_ATTRIBUTES
        }
        self._inner.on_end(
            ReadableSpan(
                name=span.name,
                context=span.context,
                parent=span.parent,
                resource=span.resource,
                attributes=attributes,
                links=span.links,
                kind=span.kind,
                status=Status(span.status.status_code),
                start_time=span.start_time,
                end_time=span.end_time,
                instrumentation_scope=span.instrumentation_scope,
            )
        )

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def set_attributes(span: trace.Span, attributes: Mapping[str, Any]) -> None:
    """Set only allowed attributes; anything else is a programming error, refused loudly."""
    for key, value in attributes.items():
        if key not in ALLOWED_ATTRIBUTES:
            raise ValueError(f"span attribute {key!r} is not in the allowed set (no text in spans)")
        if value is not None:
            span.set_attribute(key, value)


def traceparent_headers() -> dict[str, str]:
    """The current trace context as W3C headers (empty when tracing is off)."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier
