"""What every upstream adapter offers, and the pieces they share: circuit breaker and SSE parsing.

An upstream is called with an OpenAI-shaped body (already sanitized for managed routes) and
answers in the OpenAI shape, whatever its own wire format (see ``ubiai.py``). Errors are mapped to
:mod:`gateway.errors` at this boundary (``map_transport_errors``): messages name the upstream by
its configured name, never by URL (a UbiAI URL carries its token).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import httpx2

from gateway.errors import APIError, ServiceUnavailable, UpstreamError, UpstreamTimeout

__all__ = [
    "CircuitBreaker",
    "CircuitState",
    "Endpoint",
    "SSEParser",
    "Upstream",
    "UpstreamReply",
    "map_transport_errors",
]


class Endpoint(StrEnum):
    CHAT = "chat/completions"
    COMPLETIONS = "completions"


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    status: int
    body: dict[str, Any]


class UpstreamStream(Protocol):
    def events(self) -> AsyncIterator[str]:
        """The ``data:`` payloads of the SSE stream, ``[DONE]`` excluded."""
        ...

    async def aclose(self) -> None: ...


class Upstream(Protocol):
    name: str
    kind: str  # "onprem" | "managed"

    def upstream_model(self, alias: str) -> str: ...

    async def complete(self, endpoint: Endpoint, body: dict[str, Any]) -> UpstreamReply: ...

    async def stream(self, endpoint: Endpoint, body: dict[str, Any]) -> UpstreamStream: ...

    def circuit_state(self) -> str: ...

    async def aclose(self) -> None: ...


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; after ``reset_after`` seconds lets one
    trial through (half-open); a success closes it, a failure opens it again."""

    def __init__(self, name: str, *, threshold: int, reset_after: float) -> None:
        self.name = name
        self._threshold = threshold
        self._reset_after = reset_after
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if time.monotonic() - self._opened_at >= self._reset_after:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def before_call(self) -> None:
        state = self.state
        if state is CircuitState.CLOSED:
            return
        if state is CircuitState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return
        remaining = self._reset_after - (time.monotonic() - (self._opened_at or 0.0))
        raise ServiceUnavailable(
            f"upstream '{self.name}' is failing; its circuit is open for another {max(remaining, 0):.0f} s",
            code="upstream_circuit_open",
            retry_after=max(remaining, 1.0),
        )

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False

    def failure(self) -> None:
        self._failures += 1
        self._trial_in_flight = False
        if self._opened_at is not None or self._failures >= self._threshold:
            self._opened_at = time.monotonic()


@contextmanager
def map_transport_errors(name: str, breaker: CircuitBreaker) -> Iterator[None]:
    """Translate httpx2 errors into gateway errors and feed the circuit breaker."""
    try:
        yield
    except httpx2.TimeoutException as exc:
        breaker.failure()
        raise UpstreamTimeout(f"upstream '{name}' timed out ({type(exc).__name__})") from None
    except httpx2.TransportError as exc:
        breaker.failure()
        raise UpstreamError(
            f"upstream '{name}' could not be reached ({type(exc).__name__})"
        ) from None
    except (UpstreamError, APIError):
        raise
    except ValueError as exc:  # JSON decoding of a malformed answer
        breaker.failure()
        raise UpstreamError(
            f"upstream '{name}' sent a malformed answer ({type(exc).__name__})"
        ) from None


class SSEParser:
    """Incremental Server-Sent Events parser: feed bytes, get complete ``data`` payloads."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk.replace(b"\r\n", b"\n")
        events = []
        while b"\n\n" in self._buffer:
            raw, self._buffer = self._buffer.split(b"\n\n", 1)
            data_lines = [
                line[5:].removeprefix(b" ")
                for line in raw.split(b"\n")
                if line.startswith(b"data:")
            ]
            if data_lines:
                events.append(b"\n".join(data_lines).decode("utf-8"))
        return events
