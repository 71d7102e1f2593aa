"""The shared half of every adapter, as httpx splits client from transport: an adapter says what
to send and how to read the answer's wire format; the pool owns the rest.

- **Targets**: one ``httpx2.AsyncClient`` (keep-alive pool, explicit ``Timeout``) and one
  circuit breaker per URL of ``base_url``.
- **Picking**: least outstanding requests first, skipping targets that are busy (a 429/503's
  Retry-After) or whose circuit is open.
- **Retries**: on another target, only when the first one processed nothing: the connection
  could not be made, or it answered 429/503.
- **In-flight counting and the breaker's verdict**: ``_Lease``, the only code that touches
  either, released exactly once per attempt (a stream releases it when it ends).
- **Bounds**, each a named config field (``_limits.py``): ``timeout.total`` (one deadline for
  the whole call: retries, status, body or stream), ``max_answer_bytes`` (a JSON body, or all
  events of a stream together), ``max_sse_event_bytes`` (one event; streams are ``_stream.py``).
- **Status before body**: an error status is judged on its code; its body is never parsed as an
  answer (a plain-text 404 is a refusal, not a malformed answer).

Failures are ``gateway.errors`` exceptions whose messages name the upstream by its configured
name and never carry the URL, the exception's own text, or any byte of the answer.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx2

from gateway.config import UpstreamConfig
from gateway.errors import (
    GatewayError,
    InvalidRequest,
    RateLimited,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.upstreams._breaker import CircuitBreaker
from gateway.upstreams._errors import HTTPX2_ERRORS, UpstreamRefused, translate
from gateway.upstreams._limits import Limits, parse_json, read_capped
from gateway.upstreams._stream import EventStream, StreamDecoder
from pki.tls import client_context

__all__ = ["RequestBuilder", "UpstreamPool", "build_ssl_context"]

T = TypeVar("T")

# An error status's body is read only for its error code, and at most this much of it.
ERROR_BODY_BYTES = 65_536
# Error codes an upstream may name that are repeated to the caller: a closed list, because any
# other text the upstream sends (its message, its "param") may echo the request.
_KNOWN_ERROR_CODES = frozenset(
    {
        "context_length_exceeded",
        "invalid_value",
        "invalid_type",
        "invalid_prompt",
        "missing_required_parameter",
        "unsupported_parameter",
        "unsupported_value",
        "string_above_max_length",
        "array_above_max_length",
        "content_filter",
        "model_not_found",
        "invalid_api_key",
        "insufficient_quota",
    }
)
# Content types named in the error for a stream request answered with something else; any other
# value is not repeated (it is upstream-chosen text).
_KNOWN_CONTENT_TYPES = frozenset({"application/json", "text/html", "text/plain", ""})

RequestBuilder = Callable[[httpx2.AsyncClient, str], httpx2.Request]
"""Builds the request for one target from its client and URL (``base_url`` without a trailing
slash). Called once per attempt, so headers such as ``traceparent`` are current."""


def build_ssl_context(config: UpstreamConfig) -> ssl.SSLContext | bool:
    tls = config.tls
    if tls.ca is None:
        return True  # the system trust store (managed APIs on the internet)
    return client_context(ca=tls.ca, cert=tls.cert, key=tls.key)


@dataclass(eq=False)
class _Target:
    url: str
    client: httpx2.AsyncClient
    breaker: CircuitBreaker
    in_flight: int = 0  # changed by _Lease only
    busy_until: float = 0.0  # monotonic time; after a 429/503 with Retry-After


class _TryAnother(Exception):
    """The target processed nothing (no connection, or 429/503): the next target may take it."""

    def __init__(self, error: GatewayError, *, failed: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.failed = failed  # whether it counts against the target's breaker


def _verdict(exc: BaseException | None) -> bool | None:
    """What one attempt says about the target's health: True healthy, False failing, None
    nothing (the caller went away, our own pool was full, a 429). The one place this is decided.

    A 4xx is healthy: the upstream is up and judged the request. Counting it as a failure would
    let one caller who sends bad requests open the circuit for every caller.
    """
    if exc is None:
        return True
    if isinstance(exc, _TryAnother):
        return False if exc.failed else None
    if isinstance(exc, UpstreamRefused | InvalidRequest):
        return True
    if isinstance(exc, UpstreamError):
        return False
    return None


class _Lease:
    """One attempt's hold on one target: counted in flight from creation to release, and the
    breaker given its verdict at release; ``release`` is idempotent (the first call wins)."""

    def __init__(self, target: _Target) -> None:
        self._target = target
        self._held = True
        target.in_flight += 1

    def __enter__(self) -> _Lease:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.release(exc)

    def release(self, exc: BaseException | None, *, abandoned: bool = False) -> None:
        if not self._held:
            return
        self._held = False
        self._target.in_flight -= 1
        verdict = None if abandoned else _verdict(exc)
        breaker = self._target.breaker
        if verdict is True:
            breaker.success()
        elif verdict is False:
            breaker.failure()
        else:
            breaker.release()


class UpstreamPool:
    """The targets of one configured upstream and every call made to them."""

    def __init__(self, name: str, config: UpstreamConfig) -> None:
        self.name = name
        self._limits = Limits.from_config(name, config)
        timeout = httpx2.Timeout(
            connect=config.timeout.connect,
            read=config.timeout.read,
            write=config.timeout.write,
            pool=config.timeout.pool,
        )
        limits = httpx2.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_connections,
        )
        verify = build_ssl_context(config)
        self._targets = [
            _Target(
                url=url.rstrip("/"),
                client=httpx2.AsyncClient(timeout=timeout, limits=limits, verify=verify),
                breaker=CircuitBreaker(
                    name,
                    threshold=config.circuit.failure_threshold,
                    reset_after=config.circuit.reset_after_s,
                ),
            )
            for url in config.urls()
        ]

    def circuit_state(self) -> str:
        """``closed`` while any target's circuit is closed, else the least severe state."""
        states = {t.breaker.state.value for t in self._targets}
        return "closed" if "closed" in states else sorted(states)[0]

    async def aclose(self) -> None:
        for target in self._targets:
            await target.client.aclose()

    # -- one call ------------------------------------------------------------------------------

    async def request_json(self, build: RequestBuilder, parse: Callable[[Any], T]) -> T:
        """Send, check the status, read the JSON answer (at most ``max_answer_bytes``) and hand it
        to ``parse`` (the adapter's wire format; its UpstreamError counts against the target)."""
        deadline = self._deadline()

        async def attempt(target: _Target) -> T:
            response = await self._send(target, build, deadline)
            try:
                await self._check_status(target, response, deadline)
                raw = await read_capped(
                    self._limits, response, self._limits.max_answer_bytes, deadline
                )
            finally:
                await response.aclose()
            return parse(parse_json(self.name, raw))

        return await self._call(attempt, hold=False)

    async def request_stream(self, build: RequestBuilder, decoder: StreamDecoder) -> EventStream:
        """Send, check the status and content type, and read up to the first payload, so any
        failure before the first byte reaches the caller is raised here (where the caller may
        still fall back). The returned stream holds the target until it ends or is closed."""
        deadline = self._deadline()

        async def attempt(target: _Target) -> EventStream:
            response = await self._send(target, build, deadline)
            try:
                await self._check_status(target, response, deadline)
                self._check_event_stream(response)
            except BaseException:
                await response.aclose()
                raise
            return EventStream(self._limits, response, decoder, deadline)

        stream = await self._call(attempt, hold=True)
        await stream.prime()
        return stream

    def _deadline(self) -> float:
        return asyncio.get_running_loop().time() + self._limits.total

    async def _call(self, attempt: Callable[[_Target], Awaitable[T]], *, hold: bool) -> T:
        """Run ``attempt`` on the best target, then on the next while it raises ``_TryAnother``.
        ``hold``: the result (a stream) keeps the lease, and releases it itself."""
        tried: list[_Target] = []
        last: GatewayError | None = None
        while True:
            target = self._pick(tried, last)
            tried.append(target)
            lease = _Lease(target)
            try:
                result = await attempt(target)
            except _TryAnother as retry:
                lease.release(retry)
                last = retry.error
                continue
            except BaseException as exc:
                lease.release(exc)
                raise
            if isinstance(result, EventStream) and hold:
                result.adopt(lease)
            else:
                lease.release(None)
            return result

    def _pick(self, tried: list[_Target], last: GatewayError | None) -> _Target:
        """The untried target with the fewest requests outstanding whose breaker lets a call
        through; when there is none, the reason (the last attempt's error first)."""
        now = time.monotonic()
        untried = [t for t in self._targets if t not in tried]
        ready = [t for t in untried if t.busy_until <= now]
        if not ready:
            if last is not None:
                raise last
            wait = min(t.busy_until for t in untried) - now
            raise RateLimited(
                f"every target of upstream '{self.name}' is at capacity; retry after the "
                "indicated time",
                code="upstream_busy",
                retry_after=max(wait, 1.0),
            )
        circuit_open: ServiceUnavailable | None = None
        for target in sorted(ready, key=lambda t: t.in_flight):
            try:
                target.breaker.before_call()
            except ServiceUnavailable as exc:
                circuit_open = exc
                continue
            return target
        if last is not None:
            raise last
        if circuit_open is None:  # pragma: no cover - ready is not empty
            raise ServiceUnavailable(f"no target of upstream '{self.name}' could take the request")
        raise circuit_open

    async def _send(
        self, target: _Target, build: RequestBuilder, deadline: float
    ) -> httpx2.Response:
        request = build(target.client, target.url)
        try:
            async with asyncio.timeout_at(deadline):
                return await target.client.send(request, stream=True)
        except TimeoutError:
            raise self._limits.past_deadline() from None
        except (httpx2.ConnectError, httpx2.ConnectTimeout) as exc:
            # Nothing was sent: another target may take it (a worker that is down).
            raise _TryAnother(translate(self.name, exc), failed=True) from None
        except httpx2.PoolTimeout as exc:
            # Our own connection pool to this target is full: nothing was sent, and it says
            # nothing about the target's health.
            raise _TryAnother(translate(self.name, exc), failed=False) from None
        except HTTPX2_ERRORS as exc:
            raise translate(self.name, exc) from None

    async def _check_status(
        self, target: _Target, response: httpx2.Response, deadline: float
    ) -> None:
        """Judge the status before any byte of the body is parsed as an answer."""
        status = response.status_code
        if 200 <= status < 300:
            return
        name = self.name
        if status in (429, 503):
            # Overloaded or warming up: skip the target for its Retry-After, try another.
            try:
                retry = float(response.headers.get("retry-after", "1"))
            except ValueError:
                retry = 1.0
            target.busy_until = time.monotonic() + min(max(retry, 0.5), 60.0)
            error = RateLimited(
                f"upstream '{name}' is at capacity; retry after the indicated time",
                code="upstream_busy",
                retry_after=max(target.busy_until - time.monotonic(), 1.0),
            )
            raise _TryAnother(error, failed=status == 503)
        if status == 408:
            raise UpstreamTimeout(f"upstream '{name}' answered HTTP 408 (request timeout)")
        if status >= 500:
            raise UpstreamError(f"upstream '{name}' answered HTTP {status}")
        if status in (401, 403, 404):
            raise UpstreamRefused(
                f"upstream '{name}' refused this gateway (HTTP {status}); check its api_key, "
                "base_url and model_map"
            )
        if status >= 400:
            code = await self._error_code(response, deadline)
            detail = f", {code}" if code else ""
            raise InvalidRequest(
                f"upstream '{name}' refused the request (HTTP {status}{detail})",
                code="upstream_invalid_request",
            )
        # 1xx/3xx: redirects are never followed (a redirect could carry the key elsewhere).
        raise UpstreamError(f"upstream '{name}' answered HTTP {status}, which is not an answer")

    async def _error_code(self, response: httpx2.Response, deadline: float) -> str | None:
        """The upstream's error code when it is one of the known ones; nothing else is read."""
        try:
            raw = await read_capped(self._limits, response, ERROR_BODY_BYTES, deadline)
            payload = json.loads(raw)
        except (GatewayError, ValueError, RecursionError):
            return None
        error = payload.get("error") if isinstance(payload, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        return code if isinstance(code, str) and code in _KNOWN_ERROR_CODES else None

    def _check_event_stream(self, response: httpx2.Response) -> None:
        media_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type == "text/event-stream":
            return
        shown = f"'{media_type}'" if media_type in _KNOWN_CONTENT_TYPES else "another content type"
        if not media_type:
            shown = "no content type"
        raise UpstreamError(
            f"upstream '{self.name}' answered a stream request with {shown} instead of "
            "text/event-stream"
        )
