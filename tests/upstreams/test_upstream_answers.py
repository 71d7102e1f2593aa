"""Each bad answer a real loopback upstream can give, through the OpenAI adapter (issue 14).

Every row: the error class and code the caller gets, that no value sent (the bad upstream echoes
it) and no URL is in the error, the breaker's reaction, and, where a bound is the point, the bound
reached: the deadline (time), the answer/event size (bytes the upstream got out before the
gateway hung up, and the process's peak RSS).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.errors import GatewayError, InvalidRequest, RateLimited, UpstreamError, UpstreamTimeout
from gateway.upstreams import OpenAIUpstream, UpstreamRefused
from gateway.upstreams.base import Endpoint
from tests.fixtures.bad_upstream import BadUpstream, MiB
from tests.upstreams._support import (
    CHAT,
    STREAM_CHAT,
    assert_no_leak,
    openai,
    rss_peak,
    rss_peak_reset,
)

# Short deadline with a per-read timeout longer than the drip interval: only the deadline can
# end a drip (the issue: 1 byte every 2 s held a request for 40 s+).
DRIP = {"timeout": {"read": 5.0, "total": 1.5}}

# (mode, error class, code, breaker opens, config overrides)
COMPLETE_CASES: list[tuple[str, type[GatewayError], str, bool, dict[str, Any]]] = [
    ("huge_json", UpstreamError, "upstream_answer_too_large", True, {}),
    ("broken_gzip", UpstreamError, "upstream_failed", True, {}),
    ("text_404", UpstreamRefused, "upstream_failed", False, {}),
    ("json_400", InvalidRequest, "upstream_invalid_request", False, {}),
    ("text_500", UpstreamError, "upstream_failed", True, {}),
    ("json_500", UpstreamError, "upstream_failed", True, {}),
    ("html_200", UpstreamError, "upstream_failed", True, {}),
    ("deep_json", UpstreamError, "upstream_failed", True, {}),
    ("huge_int", UpstreamError, "upstream_failed", True, {}),
    ("array_json", UpstreamError, "upstream_failed", True, {}),
    ("no_choices", UpstreamError, "upstream_failed", True, {}),
    ("empty_200", UpstreamError, "upstream_failed", True, {}),
    ("redirect", UpstreamError, "upstream_failed", True, {}),
    ("drip_json", UpstreamTimeout, "upstream_timeout", True, DRIP),
    ("drip_head", UpstreamTimeout, "upstream_timeout", True, DRIP),
    ("busy_429", RateLimited, "upstream_busy", False, {}),
]


@pytest.mark.parametrize(
    ("mode", "error", "code", "opens", "overrides"),
    COMPLETE_CASES,
    ids=[row[0] for row in COMPLETE_CASES],
)
async def test_complete_bad_answer(
    bad_upstream: BadUpstream,
    mode: str,
    error: type[GatewayError],
    code: str,
    opens: bool,
    overrides: dict[str, Any],
) -> None:
    """A bad non-stream answer raises the mapped gateway error (never an httpx2 error or a 500),
    echoes nothing sent, ends within the deadline, and opens the breaker only when the upstream
    is at fault (5xx, transport, unusable 2xx), never for a 4xx or a 429."""
    upstream = openai(bad_upstream.url(mode), **overrides)
    try:
        started = time.monotonic()
        with pytest.raises(GatewayError) as caught:
            await upstream.complete(Endpoint.CHAT, CHAT)
        elapsed = time.monotonic() - started
        assert type(caught.value) is error
        assert caught.value.code == code
        assert_no_leak(caught.value)
        assert upstream.circuit_state() == ("open" if opens else "closed")
        if "total" in overrides.get("timeout", {}):
            assert elapsed < overrides["timeout"]["total"] + 2.0
            assert "timeout.total" in caught.value.message
        assert upstream._pool._targets[0].in_flight == 0
    finally:
        await upstream.aclose()


async def test_plain_text_404_is_a_refusal_not_malformed(bad_upstream: BadUpstream) -> None:
    """The status is judged before the body: a plain-text 404 says HTTP 404, not 'not JSON'."""
    upstream = openai(bad_upstream.url("text_404"))
    try:
        with pytest.raises(UpstreamRefused, match="HTTP 404") as caught:
            await upstream.complete(Endpoint.CHAT, CHAT)
        assert "JSON" not in caught.value.message
    finally:
        await upstream.aclose()


async def test_upstream_400_names_a_known_code_and_nothing_it_said(
    bad_upstream: BadUpstream,
) -> None:
    """A 400 whose message echoes the prompt: the caller learns the status and the (known) code
    'context_length_exceeded', never the upstream's message."""
    upstream = openai(bad_upstream.url("json_400"))
    try:
        with pytest.raises(InvalidRequest) as caught:
            await upstream.complete(Endpoint.CHAT, CHAT)
        assert "HTTP 400" in caught.value.message
        assert "context_length_exceeded" in caught.value.message
        assert "Invalid value" not in caught.value.message
    finally:
        await upstream.aclose()


async def test_huge_json_answer_stops_at_the_limit_with_bounded_rss(
    bad_upstream: BadUpstream,
) -> None:
    """A 300 MB JSON answer fails at max_answer_bytes (default 16 MiB): the gateway hangs up
    long before the upstream is done, and the process's peak RSS grows by far less than the
    answer (the issue saw 0.48 -> 1.98 GB)."""
    upstream = openai(bad_upstream.url("huge_json"))
    try:
        before = rss_peak_reset()
        with pytest.raises(UpstreamError, match="max_answer_bytes"):
            await upstream.complete(Endpoint.CHAT, CHAT)
        growth = rss_peak() - before
    finally:
        await upstream.aclose()
    [served] = bad_upstream.served_for("huge_json")
    assert not served.finished
    assert served.sent < 64 * MiB
    assert growth < 96 * MiB, f"peak RSS grew by {growth / MiB:.0f} MiB"


# (mode, fails at "open" (await stream()) or "events", error, code, breaker opens, overrides)
STREAM_CASES: list[tuple[str, str, type[GatewayError], str, bool, dict[str, Any]]] = [
    ("html_200", "open", UpstreamError, "upstream_failed", True, {}),
    ("ok_json", "open", UpstreamError, "upstream_failed", True, {}),  # JSON object, not SSE
    ("text_404", "open", UpstreamRefused, "upstream_failed", False, {}),
    ("json_400", "open", InvalidRequest, "upstream_invalid_request", False, {}),
    ("text_500", "open", UpstreamError, "upstream_failed", True, {}),
    ("empty_sse", "open", UpstreamError, "upstream_failed", True, {}),
    ("done_only", "open", UpstreamError, "upstream_failed", True, {}),
    ("non_json_event", "open", UpstreamError, "upstream_failed", True, {}),
    ("broken_gzip_sse", "open", UpstreamError, "upstream_failed", True, {}),
    ("endless_event", "open", UpstreamError, "upstream_event_too_large", True, {}),
    ("endless_lines", "open", UpstreamError, "upstream_event_too_large", True, {}),
    ("drip_head", "open", UpstreamTimeout, "upstream_timeout", True, DRIP),
    ("no_done", "events", UpstreamError, "upstream_failed", True, {}),
    ("mid_close", "events", UpstreamError, "upstream_failed", True, {}),
    ("error_event", "events", UpstreamError, "upstream_failed", True, {}),
    ("drip_sse", "events", UpstreamTimeout, "upstream_timeout", True, DRIP),
    (
        "many_events",
        "events",
        UpstreamError,
        "upstream_answer_too_large",
        True,
        {"max_answer_bytes": MiB},
    ),
]


async def _consume(upstream: OpenAIUpstream, opened: list[bool], passed: list[str]) -> None:
    stream = await upstream.stream(Endpoint.CHAT, STREAM_CHAT)
    opened.append(True)
    try:
        async for payload in stream.events():
            passed.append(payload)
    finally:
        await stream.aclose()


@pytest.mark.parametrize(
    ("mode", "where", "error", "code", "opens", "overrides"),
    STREAM_CASES,
    ids=[row[0] for row in STREAM_CASES],
)
async def test_stream_bad_answer(
    bad_upstream: BadUpstream,
    mode: str,
    where: str,
    error: type[GatewayError],
    code: str,
    opens: bool,
    overrides: dict[str, Any],
) -> None:
    """A stream that is not SSE, breaks its format, is cut, or passes a limit raises the mapped
    error: from ``await upstream.stream()`` when nothing was passed on yet (so the pipeline can
    still fall back), else from ``events()`` (so the caller gets an error event, not a silent
    end); nothing sent is echoed and the breaker opens only for the upstream's own faults."""
    upstream = openai(bad_upstream.url(mode), **overrides)
    opened: list[bool] = []
    passed: list[str] = []
    try:
        started = time.monotonic()
        with pytest.raises(GatewayError) as caught:
            await _consume(upstream, opened, passed)
        elapsed = time.monotonic() - started
        assert type(caught.value) is error
        assert caught.value.code == code
        assert_no_leak(caught.value)
        assert upstream.circuit_state() == ("open" if opens else "closed")
        # "open": raised by await stream() (fallback still possible); "events": after >= 1 event.
        assert bool(opened) == (where == "events")
        assert bool(passed) == (where == "events")
        if "total" in overrides.get("timeout", {}):
            assert elapsed < overrides["timeout"]["total"] + 2.0
        assert upstream._pool._targets[0].in_flight == 0
    finally:
        await upstream.aclose()


@pytest.mark.parametrize("mode", ["endless_event", "endless_lines"])
async def test_endless_event_fails_at_the_event_limit(bad_upstream: BadUpstream, mode: str) -> None:
    """30 MB in one event (no blank line) is refused once it passes max_sse_event_bytes (1 MiB):
    the gateway hangs up after a few MiB, long before the 30 MB are out."""
    upstream = openai(bad_upstream.url(mode))
    try:
        before = rss_peak_reset()
        with pytest.raises(UpstreamError, match="max_sse_event_bytes"):
            await upstream.stream(Endpoint.CHAT, STREAM_CHAT)
        growth = rss_peak() - before
    finally:
        await upstream.aclose()
    [served] = bad_upstream.served_for(mode)
    assert not served.finished
    assert served.sent < 12 * MiB
    assert growth < 64 * MiB, f"peak RSS grew by {growth / MiB:.0f} MiB"


@pytest.mark.parametrize("mode", ["ok_sse", "finish_no_done"])
async def test_a_proper_stream_passes_every_event(bad_upstream: BadUpstream, mode: str) -> None:
    """A stream that ends with [DONE], or ends after a finish_reason (servers that omit [DONE]),
    passes all its events and leaves the breaker closed."""
    upstream = openai(bad_upstream.url(mode))
    try:
        stream = await upstream.stream(Endpoint.CHAT, STREAM_CHAT)
        try:
            payloads = [payload async for payload in stream.events()]
        finally:
            await stream.aclose()
        assert payloads
        assert all(p.startswith("{") for p in payloads)
        assert '"finish_reason": "stop"' in payloads[-1]
        assert upstream.circuit_state() == "closed"
        assert upstream._pool._targets[0].in_flight == 0
    finally:
        await upstream.aclose()


async def test_a_proper_answer_is_returned(bad_upstream: BadUpstream) -> None:
    """The well-behaved answer of the same server goes through (the bad rows are not the server)."""
    upstream = openai(bad_upstream.url("ok_json"))
    try:
        reply = await upstream.complete(Endpoint.CHAT, CHAT)
        assert reply.body["choices"][0]["message"]["content"] == "hello"
    finally:
        await upstream.aclose()
