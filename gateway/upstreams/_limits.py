"""The named bounds on one upstream's answers, and reading a body within them.

Each bound is a config field with its default and reason documented in ``gateway.config``:
``timeout.total`` (one deadline for the whole call), ``max_answer_bytes`` (a JSON body, or all
events of a stream together, in UTF-8 bytes) and ``max_sse_event_bytes`` (one event). The errors
name the limit and its value, never a byte of the answer.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx2

from gateway.config import UpstreamConfig
from gateway.errors import UpstreamError, UpstreamTimeout
from gateway.upstreams._errors import map_transport_errors

__all__ = ["Limits", "parse_json", "read_capped"]


@dataclass(frozen=True, slots=True)
class Limits:
    name: str  # the upstream's configured name, for messages
    total: float
    max_answer_bytes: int
    max_event_bytes: int

    @classmethod
    def from_config(cls, name: str, config: UpstreamConfig) -> Limits:
        return cls(
            name=name,
            total=config.timeout.total,
            max_answer_bytes=config.max_answer_bytes,
            max_event_bytes=config.max_sse_event_bytes,
        )

    def past_deadline(self) -> UpstreamTimeout:
        return UpstreamTimeout(
            f"upstream '{self.name}' did not finish within timeout.total ({self.total:g} s)"
        )

    def answer_too_large(self) -> UpstreamError:
        return UpstreamError(
            f"upstream '{self.name}' sent an answer over max_answer_bytes "
            f"({self.max_answer_bytes} bytes); raise the limit if its answers are that large",
            code="upstream_answer_too_large",
        )

    def event_too_large(self) -> UpstreamError:
        return UpstreamError(
            f"upstream '{self.name}' sent a stream event over max_sse_event_bytes "
            f"({self.max_event_bytes} bytes)",
            code="upstream_event_too_large",
        )


def parse_json(name: str, raw: bytes | str) -> Any:
    """JSON from an upstream; anything unparsable (nesting too deep, a 5,000-digit integer,
    invalid UTF-8, not JSON at all) is an UpstreamError naming no byte of it."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise UpstreamError(f"upstream '{name}' sent an answer that is not valid JSON") from None


async def read_capped(
    limits: Limits, response: httpx2.Response, limit: int, deadline: float
) -> bytes:
    """The decoded body (httpx2 inflates in pieces of at most 1 MiB), failing as soon as it
    passes ``limit`` bytes or the deadline: nothing past the limit is ever held."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout_at(deadline):
            with map_transport_errors(limits.name):
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise limits.answer_too_large()
                    chunks.append(chunk)
    except TimeoutError:
        raise limits.past_deadline() from None
    return b"".join(chunks)
