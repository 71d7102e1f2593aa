"""Worker tracing: the gateway's W3C ``traceparent`` continues here, so one trace shows both.

A pure ASGI middleware opens one span per ``/v1/*`` request, parented by the incoming trace
context, and closes it when the response (streams included) is finished. Attributes: endpoint
and status only — never text. With ``exporter: none`` and no extra processor the tracer is
OpenTelemetry's no-op tracer. (The gateway has its own copy of this small setup: ``inference``
never imports ``gateway``.)
"""

from __future__ import annotations

from typing import Literal

from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from pydantic import BaseModel, ConfigDict
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["TracingMiddleware", "WorkerTracingConfig", "build_tracer"]


class WorkerTracingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    exporter: Literal["none", "console", "otlp"] = "none"
    endpoint: str | None = None  # OTLP/HTTP traces endpoint
    service_name: str = "bastion-worker"


def build_tracer(
    config: WorkerTracingConfig, extra_processor: SpanProcessor | None = None
) -> trace.Tracer:
    if config.exporter == "none" and extra_processor is None:
        return trace.NoOpTracer()
    provider = TracerProvider(resource=Resource.create({"service.name": config.service_name}))
    exporter: SpanExporter | None = None
    if config.exporter == "console":
        exporter = ConsoleSpanExporter()
    elif config.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = (
            OTLPSpanExporter(endpoint=config.endpoint) if config.endpoint else OTLPSpanExporter()
        )
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    if extra_processor is not None:
        provider.add_span_processor(extra_processor)
    return provider.get_tracer("bastion.worker")


class TracingMiddleware:
    def __init__(self, app: ASGIApp, tracer: trace.Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        context = extract(carrier)
        with self.tracer.start_as_current_span(
            "bastion.worker.request",
            context=context,
            kind=trace.SpanKind.SERVER,
            record_exception=False,
        ) as span:
            span.set_attribute("bastion.endpoint", str(scope["path"]))

            async def traced_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", int(message["status"]))
                await send(message)

            await self.app(scope, receive, traced_send)
