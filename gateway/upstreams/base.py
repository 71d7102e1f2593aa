"""What every upstream adapter offers.

An upstream is called with an OpenAI-shaped body (already sanitized for managed routes) and
answers in the OpenAI shape, whatever its own wire format (see ``ubiai.py``). The adapters keep
only their wire format; targets, picking, retries, the circuit breaker, in-flight counting and the
bounds on an answer live in ``_pool.py``, and httpx2's errors are mapped to
:mod:`gateway.errors` in ``_errors.py``: messages name the upstream by its configured name,
never by URL (a UbiAI URL carries its token), and never repeat a byte of the answer.

The contract the request pipeline relies on:

- ``encode(endpoint, body)`` is the exact request body the adapter sends for ``body``, in its
  own wire shape; the pipeline scans those bytes and passes them back as ``wire``, and with
  ``wire`` an adapter sends exactly ``wire`` (so what is scanned is what leaves).

- ``complete`` returns an answer read whole and checked, or raises a ``GatewayError``.
- ``stream`` reads up to the first event before it returns, so a failure before the first byte
  reaches the caller raises from ``await upstream.stream(...)`` (the pipeline may still fall
  back on-prem). After that, ``events()`` raises ``UpstreamError`` for a stream that breaks its
  format, is cut before its end, or passes a limit; it ends normally only after a proper end.
- ``aclose`` on a stream is always called, and is safe at any point.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.vocabulary import Endpoint, RouteKind  # Endpoint re-exported for the adapters

__all__ = ["Endpoint", "Upstream", "UpstreamReply", "UpstreamStream"]


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    status: int
    body: dict[str, Any]


class UpstreamStream(Protocol):
    def events(self) -> AsyncIterator[str]:
        """The ``data:`` payloads of the SSE stream, ``[DONE]`` excluded (each a JSON object)."""
        ...

    async def aclose(self) -> None: ...


class Upstream(Protocol):
    name: str
    kind: RouteKind

    def upstream_model(self, alias: str) -> str: ...

    def encode(self, endpoint: Endpoint, body: Mapping[str, Any]) -> bytes:
        """The exact bytes this adapter would send as the request body for the OpenAI-shaped
        ``body`` (its own wire shape, config fields included). No I/O, no side effect."""
        ...

    async def complete(
        self, endpoint: Endpoint, body: dict[str, Any], wire: bytes | None = None
    ) -> UpstreamReply:
        """``wire`` given: those bytes are the request body, byte for byte (``body`` is read
        only to shape the answer); else ``encode(endpoint, body)``."""
        ...

    async def stream(
        self, endpoint: Endpoint, body: dict[str, Any], wire: bytes | None = None
    ) -> UpstreamStream: ...

    def circuit_state(self) -> str: ...

    async def aclose(self) -> None: ...
