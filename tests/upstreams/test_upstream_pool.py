"""The shared pool: in-flight counting, the circuit breaker's verdicts, retries across targets,
and the UbiAI adapter riding on the same pool. All against the real loopback bad upstream."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.errors import GatewayError, RateLimited, ServiceUnavailable, UpstreamError
from gateway.upstreams import OpenAIUpstream, UbiAIUpstream, UpstreamRefused
from gateway.upstreams.base import Endpoint
from pki.secret import Secret
from tests.fixtures.bad_upstream import BadUpstream
from tests.upstreams._support import CHAT, STREAM_CHAT, assert_no_leak, config, openai


def _dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/v1"


async def _complete(upstream: OpenAIUpstream) -> None:
    await upstream.complete(Endpoint.CHAT, CHAT)


async def _stream_all(upstream: OpenAIUpstream) -> None:
    stream = await upstream.stream(Endpoint.CHAT, STREAM_CHAT)
    try:
        async for _ in stream.events():
            pass
    finally:
        await stream.aclose()


async def _stream_abandoned(upstream: OpenAIUpstream) -> None:
    stream = await upstream.stream(Endpoint.CHAT, STREAM_CHAT)
    try:
        async for _ in stream.events():
            break  # the caller went away after the first event
    finally:
        await stream.aclose()


async def _cancelled(upstream: OpenAIUpstream) -> None:
    task = asyncio.create_task(upstream.complete(Endpoint.CHAT, CHAT))
    await asyncio.sleep(0.3)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# (id, mode, how the call ends, circuit state after it with failure_threshold 1)
ENDINGS: list[tuple[str, str, Callable[[OpenAIUpstream], Awaitable[None]], str]] = [
    ("complete-ok", "ok_json", _complete, "closed"),
    ("complete-500", "text_500", _complete, "open"),
    ("complete-404", "text_404", _complete, "closed"),
    ("stream-done", "ok_sse", _stream_all, "closed"),
    ("stream-cut", "no_done", _stream_all, "open"),
    ("stream-html", "html_200", _stream_all, "open"),
    ("stream-abandoned", "ok_sse", _stream_abandoned, "closed"),
    ("cancelled-mid-body", "drip_json", _cancelled, "closed"),
]


@pytest.mark.parametrize(
    ("mode", "call", "state"), [row[1:] for row in ENDINGS], ids=[row[0] for row in ENDINGS]
)
async def test_every_ending_releases_the_target(
    bad_upstream: BadUpstream,
    mode: str,
    call: Callable[[OpenAIUpstream], Awaitable[None]],
    state: str,
) -> None:
    """However a call ends (answer, error, stream end, caller gone, cancellation), the target's
    in-flight count is back to 0 and the breaker got the right verdict (none for a caller that
    went away)."""
    upstream = openai(bad_upstream.url(mode))
    try:
        with contextlib.suppress(GatewayError):  # the error is test_upstream_answers's subject
            await call(upstream)
        assert upstream._pool._targets[0].in_flight == 0
        assert upstream.circuit_state() == state
    finally:
        await upstream.aclose()


async def test_a_4xx_never_opens_the_circuit(bad_upstream: BadUpstream) -> None:
    """Plain-text 404s, however many, leave the circuit closed and every call reaches the
    upstream: one caller provoking 4xx cannot shut the upstream for all."""
    upstream = openai(bad_upstream.url("text_404"), circuit={"failure_threshold": 2})
    try:
        for _ in range(4):
            with pytest.raises(UpstreamRefused):
                await upstream.complete(Endpoint.CHAT, CHAT)
        assert upstream.circuit_state() == "closed"
        assert len(bad_upstream.served_for("text_404")) == 4
    finally:
        await upstream.aclose()


async def test_5xx_opens_the_circuit_and_stops_calls(bad_upstream: BadUpstream) -> None:
    """failure_threshold 5xx in a row open the circuit: the next call is 503
    upstream_circuit_open with Retry-After, and the upstream is not called."""
    upstream = openai(bad_upstream.url("text_500"), circuit={"failure_threshold": 2})
    try:
        for _ in range(2):
            with pytest.raises(UpstreamError):
                await upstream.complete(Endpoint.CHAT, CHAT)
        with pytest.raises(ServiceUnavailable) as caught:
            await upstream.complete(Endpoint.CHAT, CHAT)
        assert caught.value.code == "upstream_circuit_open"
        assert (caught.value.retry_after or 0) >= 1
        assert len(bad_upstream.served_for("text_500")) == 2
    finally:
        await upstream.aclose()


async def test_a_success_after_4xx_and_5xx_resets_the_count(bad_upstream: BadUpstream) -> None:
    """Failures must be consecutive: 500, 404 (healthy), 500 with threshold 2 stays closed."""
    url = bad_upstream.script("text_500", "text_404", "text_500", "ok_json")
    upstream = openai(url, circuit={"failure_threshold": 2})
    try:
        for _ in range(3):
            with pytest.raises(UpstreamError):
                await upstream.complete(Endpoint.CHAT, CHAT)
        assert upstream.circuit_state() == "closed"
        await upstream.complete(Endpoint.CHAT, CHAT)
    finally:
        await upstream.aclose()


async def test_an_abandoned_half_open_trial_lets_the_next_call_through(
    bad_upstream: BadUpstream,
) -> None:
    """Half-open lets one trial through; if its caller goes away (cancelled mid-answer) the next
    call is the trial, instead of the circuit staying shut for ever."""
    url = bad_upstream.script("text_500", "drip_json", "ok_json")
    upstream = openai(url, circuit={"failure_threshold": 1, "reset_after_s": 0.2})
    try:
        with pytest.raises(UpstreamError):
            await upstream.complete(Endpoint.CHAT, CHAT)
        assert upstream.circuit_state() == "open"
        await asyncio.sleep(0.3)
        assert upstream.circuit_state() == "half_open"
        await _cancelled(upstream)  # the trial, cancelled while the body drips
        reply = await upstream.complete(Endpoint.CHAT, CHAT)
        assert reply.body["choices"]
        assert upstream.circuit_state() == "closed"
    finally:
        await upstream.aclose()


# (id, the pool's targets as modes ("dead": a closed port), outcome: "ok" or the error class)
RETRIES: list[tuple[str, list[str], type[GatewayError] | None]] = [
    ("down-then-ok", ["dead", "ok_json"], None),
    ("busy-then-ok", ["busy_429", "ok_json"], None),
    ("all-busy", ["busy_429", "busy_429"], RateLimited),
    ("all-down", ["dead", "dead"], UpstreamError),
    # A 500 means the upstream processed the request: it is not sent again elsewhere.
    ("500-not-retried", ["text_500", "ok_json"], UpstreamError),
]


@pytest.mark.parametrize(
    ("targets", "outcome"), [row[1:] for row in RETRIES], ids=[row[0] for row in RETRIES]
)
async def test_retries_only_where_nothing_was_processed(
    bad_upstream: BadUpstream, targets: list[str], outcome: type[GatewayError] | None
) -> None:
    """Another target is tried only when the first processed nothing (refused connection,
    429/503); an answer with an error status is final, so no request is processed twice."""
    urls = [_dead_url() if mode == "dead" else bad_upstream.url(mode) for mode in targets]
    upstream = openai(urls)
    try:
        if outcome is None:
            reply = await upstream.complete(Endpoint.CHAT, CHAT)
            assert reply.body["choices"]
        else:
            with pytest.raises(outcome) as caught:
                await upstream.complete(Endpoint.CHAT, CHAT)
            assert_no_leak(caught.value)
        if targets[0] == "text_500":
            assert bad_upstream.served_for("ok_json") == []
        assert all(t.in_flight == 0 for t in upstream._pool._targets)
    finally:
        await upstream.aclose()


def _ubiai(url: str, **overrides: Any) -> UbiAIUpstream:
    cfg = config(url + "/", **{"kind": "managed", "type": "ubiai", **overrides})
    return UbiAIUpstream("bad-worker", cfg, Secret("tok-SECRET-3f9a"))


# (mode, error class or None for a good answer)
UBIAI: list[tuple[str, type[GatewayError] | None]] = [
    ("ubiai_ok", None),
    ("html_200", UpstreamError),
    ("text_404", UpstreamRefused),
    ("broken_gzip", UpstreamError),
    ("huge_json", UpstreamError),
    ("ok_json", UpstreamError),  # an OpenAI answer has no 'output' field
]


@pytest.mark.parametrize(("mode", "error"), UBIAI, ids=[row[0] for row in UBIAI])
async def test_ubiai_rides_the_same_pool(
    bad_upstream: BadUpstream, mode: str, error: type[GatewayError] | None
) -> None:
    """The UbiAI adapter gets the same bounds and mapping; the token in its URL never reaches
    an error."""
    upstream = _ubiai(bad_upstream.url(mode))
    try:
        if error is None:
            reply = await upstream.complete(Endpoint.CHAT, CHAT)
            assert reply.body["choices"][0]["message"]["content"] == "hello"
            return
        with pytest.raises(error) as caught:
            await upstream.complete(Endpoint.CHAT, CHAT)
        assert_no_leak(caught.value)
        assert "tok-SECRET" not in caught.value.message
    finally:
        await upstream.aclose()
