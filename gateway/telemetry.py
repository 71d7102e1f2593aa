"""Tracing for the request path: one span per request, a child span per step.

Attributes are limited to identity, route, rule id, policy version, entity types and counts,
status and token counts — never text (:data:`ALLOWED_ATTRIBUTES` is enforced, not advisory).
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
from opentelemetry.propagate import inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
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
                provider.add_span_processor(BatchSpanProcessor(exporter))
            if extra_processor is not None:
                provider.add_span_processor(extra_processor)
            self._provider = provider
            self.tracer: trace.Tracer = provider.get_tracer("bastion.gateway")
        else:
            self.tracer = trace.NoOpTracer()

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()

    @contextmanager
    def request_span(self, endpoint: str) -> Iterator[trace.Span]:
        # record_exception=False: exception messages stay out of spans (defence in depth).
        with self.tracer.start_as_current_span(
            "bastion.request", kind=trace.SpanKind.SERVER, record_exception=False
        ) as span:
            set_attributes(span, {"bastion.endpoint": endpoint})
            yield span

    @contextmanager
    def step(self, name: str) -> Iterator[trace.Span]:
        """A child span and a latency observation for one step of the request path."""
        start = time.perf_counter()
        try:
            with self.tracer.start_as_current_span(
                f"bastion.{name}", record_exception=False
            ) as span:
                yield span
        finally:
            self.metrics.step_seconds.labels(name).observe(time.perf_counter() - start)


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
