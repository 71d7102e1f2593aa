"""Forward, restore, record: the steps after the write-ahead decision record.

An upstream failure before any byte reached the caller propagates out of :func:`forward` (the
chain then applies the policy's on-prem fallback); a failure mid-stream ends the stream with
an OpenAI-shaped error event and a failed outcome record.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from gateway.api.errors import error_response
from gateway.errors import GatewayError, UpstreamError
from gateway.pipeline._context import RequestContext, Restorer
from gateway.upstreams.base import Upstream

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["forward", "record_outcome", "stream_events", "upstream_failure"]

logger = logging.getLogger("bastion.gateway")


def _usage(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    usage = body.get("usage")
    return usage if isinstance(usage, Mapping) else None


async def forward(
    gateway: Gateway,
    ctx: RequestContext,
    upstream: Upstream,
    outgoing: dict[str, Any],
    wire: bytes | None,
    restorer: Restorer,
    headers: dict[str, str],
) -> Response:
    """Send to one upstream (``wire``: the exact scanned bytes, sent as they are); upstream
    errors propagate (before any byte reached the caller)."""
    if ctx.stream:
        return await _forward_stream(gateway, ctx, upstream, outgoing, wire, restorer, headers)
    with gateway.telemetry.step("forward"):
        reply = await upstream.complete(ctx.endpoint, outgoing, wire)
    with gateway.telemetry.step("restore"):
        answer = restorer.restore_body(reply.body)
    answer["model"] = ctx.model
    decision_id = ctx.decision_id or ""
    await gateway.audit.capture_response(decision_id, answer)
    record_outcome(gateway, ctx, 200, upstream.name, _usage(answer), None)
    return JSONResponse(answer, headers=headers)


async def _forward_stream(
    gateway: Gateway,
    ctx: RequestContext,
    upstream: Upstream,
    outgoing: dict[str, Any],
    wire: bytes | None,
    restorer: Restorer,
    headers: dict[str, str],
) -> Response:
    stream = await upstream.stream(ctx.endpoint, outgoing, wire)

    async def body() -> AsyncIterator[bytes]:
        status, error_class, usage = 200, None, None
        try:
            async for payload, event in stream_events(stream.events(), restorer, ctx.model):
                usage = _usage(event) or usage
                yield f"data: {payload}\n\n".encode()
            yield b"data: [DONE]\n\n"
        except GatewayError as exc:
            status, error_class = exc.status_code, type(exc).__name__
            gateway.metrics.upstream_errors.labels(upstream.name, error_class).inc()
            error = {
                "error": {
                    "message": exc.message,
                    "type": exc.error_type,
                    "param": None,
                    "code": exc.code,
                }
            }
            yield f"data: {json.dumps(error)}\n\n".encode()
        except BaseException:
            status, error_class = 499, "ClientDisconnected"
            raise
        finally:
            await stream.aclose()
            record_outcome(gateway, ctx, status, upstream.name, usage, error_class)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={**headers, "cache-control": "no-cache", "x-accel-buffering": "no"},
    )


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


async def upstream_failure(
    gateway: Gateway,
    ctx: RequestContext,
    upstream: str,
    exc: GatewayError,
    headers: dict[str, str],
) -> Response:
    """Count the failure, record the outcome, answer OpenAI-shaped (before any byte was sent)."""
    gateway.metrics.upstream_errors.labels(upstream, type(exc).__name__).inc()
    record_outcome(gateway, ctx, exc.status_code, upstream, None, type(exc).__name__)
    return error_response(exc, headers)


def record_outcome(
    gateway: Gateway,
    ctx: RequestContext,
    status: int,
    upstream: str | None,
    usage: Mapping[str, Any] | None,
    error_class: str | None,
) -> None:
    """Queue the outcome record without holding the answer back for its fsync: the decision
    record (written ahead) is what must be durable before bytes leave; the outcome follows in
    the trail's next group commit. Pending outcomes are awaited at shutdown."""
    latency_ms = (time.perf_counter() - ctx.started) * 1000
    decision_id = ctx.decision_id or ""

    async def write() -> None:
        try:
            await gateway.audit.append_outcome(
                decision_id,
                status=status,
                latency_ms=latency_ms,
                upstream=upstream,
                usage=usage,
                error_class=error_class,
            )
        except GatewayError:
            # The decision record is already durable; a lost outcome is counted and logged.
            gateway.metrics.audit_failures.inc()
            logger.error("audit outcome record could not be written: decision_id=%s", decision_id)

    task = asyncio.create_task(write())
    gateway.pending_outcomes.add(task)
    task.add_done_callback(gateway.pending_outcomes.discard)
