"""One streamed answer: Server-Sent Events read within the upstream's bounds.

Parsing is ``httpx2.EventSource``'s (linear: a line is joined once, when its newline arrives,
and an event is refused as soon as it passes ``max_sse_event_bytes``, blank line or not); what
the events mean is the adapter's ``StreamDecoder`` (its wire format). The stream holds its
target's lease (``_pool._Lease``) until it ends or is closed, and gives the breaker its verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Protocol, cast

import httpx2

from gateway.errors import UpstreamError
from gateway.upstreams._errors import HTTPX2_ERRORS, translate
from gateway.upstreams._limits import Limits

__all__ = ["EventStream", "StreamDecoder"]

# Yield to the event loop at least once per this many events, however fast they arrive, so
# /healthz and other requests keep being served while one upstream floods a stream.
_EVENTS_PER_YIELD = 64


class Hold(Protocol):
    """What a stream needs of its lease: release it once, with the reason it ended."""

    def release(self, exc: BaseException | None, *, abandoned: bool = False) -> None: ...


class StreamDecoder(Protocol):
    """An adapter's reading of one stream's events (its wire format), fed one event at a time."""

    @property
    def ended(self) -> bool:
        """The stream's end marker was seen (OpenAI: ``data: [DONE]``)."""
        ...

    def event(self, sse: httpx2.ServerSentEvent) -> str | None:
        """The payload to pass on, or None for an event that carries none. Raises UpstreamError
        for an event that breaks the wire format."""
        ...

    def end(self) -> None:
        """The body ended before the end marker: raise UpstreamError unless that is a proper end."""
        ...


class EventStream:
    """The events of one streamed answer, parsed by ``httpx2.EventSource`` (linear: a line is
    joined once, when its newline arrives, and an event is refused as soon as it passes
    ``max_sse_event_bytes``). Holds its target's lease until the stream ends or is closed."""

    def __init__(
        self,
        limits: Limits,
        response: httpx2.Response,
        decoder: StreamDecoder,
        deadline: float,
    ) -> None:
        self._limits = limits
        self._response = response
        self._decoder = decoder
        self._deadline = deadline
        self._source = httpx2.EventSource(response, max_event_size=limits.max_event_bytes)
        # EventSource.__aiter__ is an async generator (typed as an iterator): closed in aclose.
        self._events = cast(AsyncGenerator[httpx2.ServerSentEvent, None], aiter(self._source))
        self._lease: Hold | None = None
        self._first: str | None = None
        self._answer_bytes = 0
        self._closed = False

    def adopt(self, lease: Hold) -> None:
        self._lease = lease

    async def prime(self) -> None:
        """Read up to the first payload (raises what went wrong before it)."""
        first = await self._next()
        if first is None:
            error = UpstreamError(
                f"upstream '{self._limits.name}' ended the stream before its first event"
            )
            await self._finish(error)
            raise error
        self._first = first

    async def events(self) -> AsyncIterator[str]:
        """The payloads of the stream, its end marker excluded; raises UpstreamError when the
        stream breaks its wire format, is cut, or passes a limit."""
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        count = 0
        while (payload := await self._next()) is not None:
            yield payload
            count += 1
            if count % _EVENTS_PER_YIELD == 0:
                await asyncio.sleep(0)
        await self._finish(None)

    async def aclose(self) -> None:
        """Close the upstream connection; a stream closed before its end (the caller went away)
        gives the breaker no verdict."""
        if self._lease is not None:
            self._lease.release(None, abandoned=True)
        await self._close_response()

    async def _next(self) -> str | None:
        """The next payload, or None when the stream ended properly."""
        limits = self._limits
        try:
            while True:
                sse = await self._read_event()
                if sse is None:
                    self._decoder.end()
                    return None
                self._answer_bytes += len(sse.data.encode())
                if self._answer_bytes > limits.max_answer_bytes:
                    raise limits.answer_too_large()
                payload = self._decoder.event(sse)
                if self._decoder.ended:
                    return None
                if payload is not None:
                    return payload
        except BaseException as exc:
            await self._finish(exc)
            raise

    async def _read_event(self) -> httpx2.ServerSentEvent | None:
        limits = self._limits
        try:
            async with asyncio.timeout_at(self._deadline):
                return await anext(self._events, None)
        except TimeoutError:
            raise limits.past_deadline() from None
        except httpx2.SSEError:
            # The content type was checked before, so this is an event over the limit.
            raise limits.event_too_large() from None
        except HTTPX2_ERRORS as exc:
            raise translate(limits.name, exc) from None

    async def _finish(self, exc: BaseException | None) -> None:
        if self._lease is not None:
            self._lease.release(exc)
        await self._close_response()

    async def _close_response(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Closing a connection the upstream already broke may raise; the call's verdict is given.
        with contextlib.suppress(*HTTPX2_ERRORS):
            await self._events.aclose()  # the parser's generators first, then the connection
        with contextlib.suppress(*HTTPX2_ERRORS):
            await self._response.aclose()
