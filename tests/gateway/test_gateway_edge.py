"""The HTTP edge against hostile callers: real mTLS on loopback, raw sockets where a client
library would refuse to send the bytes (issue 14).

Pinned here: 405 carries ``Allow``; listing models needs an authorized identity; nothing the
caller sent comes back in an answer, a log line or a span (status included); ambiguous framing
(Content-Length with Transfer-Encoding) is refused and the connection closed; header and body
read deadlines and a connection cap bound what a slow or idle client can hold.
"""

from __future__ import annotations

import json
import logging
import select
import selectors
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.fixtures.pki import CertPair
from tests.fixtures.upstream import RecordingUpstream
from tests.gateway.conftest import RunningGateway

SENT = "078-05-1120"  # an SSN-shaped value the caller sends; it must never come back
CHAT = {"model": "chat-default", "messages": [{"role": "user", "content": "hello there"}]}


def _error(body: bytes) -> dict[str, Any]:
    """The OpenAI error object of an answer body (fails unless it has exactly that shape)."""
    document = json.loads(body)
    assert set(document) == {"error"}
    assert set(document["error"]) == {"message", "type", "param", "code"}
    return document["error"]  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------- raw sockets


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool  # the server closed the connection after this answer


def _tls_socket(gateway: RunningGateway, cert: CertPair, timeout: float = 10.0) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", gateway.server.port), timeout=timeout)
    return gateway.ssl_context(cert).wrap_socket(raw, server_hostname="127.0.0.1")


def _closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True if the peer closes (EOF or reset) within ``timeout`` seconds."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionError, ssl.SSLError, OSError) as exc:
        return not isinstance(exc, TimeoutError)


def _read_answer(sock: socket.socket, timeout: float = 10.0) -> RawAnswer:
    """Read one HTTP/1.1 answer (Content-Length framed), then whether the server closed."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before an answer: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return RawAnswer(int(status_line.split()[1]), headers, body, _closed_by_peer(sock, 3.0))


# ------------------------------------------------------------------------------------ the API


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/chat/completions", {"POST"}),
        ("PUT", "/v1/completions", {"POST"}),
        ("POST", "/v1/models", {"GET", "HEAD"}),
        ("DELETE", "/healthz", {"GET", "HEAD"}),
    ],
    ids=["get-chat", "put-completions", "post-models", "delete-healthz"],
)
def test_405_answers_carry_allow(
    gateway: RunningGateway, billing: CertPair, method: str, path: str, allowed: set[str]
) -> None:
    """A wrong method gets an OpenAI-shaped 405 whose Allow header lists the methods that work."""
    with gateway.client(billing) as client:
        response = client.request(method, path)
    assert response.status_code == 405
    assert _error(response.content)["code"] == "method_not_allowed"
    assert {m.strip() for m in response.headers["allow"].split(",")} == allowed


@pytest.mark.parametrize(
    ("identity", "method", "path", "status"),
    [
        ("svc/billing", "GET", "/v1/models", 200),
        ("team/other", "GET", "/v1/models", 403),  # no rule names it: the listing is refused
        ("team/other", "POST", "/v1/chat/completions", 403),
        # `svc/*` stops at `/` (the policy's glob): a deeper path is not authorized
        ("svc/team/deep/x", "GET", "/v1/models", 403),
        ("svc/team/deep/x", "POST", "/v1/chat/completions", 403),
    ],
    ids=["named-lists", "unnamed-list", "unnamed-post", "deep-list", "deep-post"],
)
def test_only_identities_a_rule_names_may_list_or_call(
    gateway: RunningGateway,
    issue_client: Callable[..., CertPair],
    identity: str,
    method: str,
    path: str,
    status: int,
) -> None:
    """GET /v1/models is refused like the POST to identities no authorization rule names, and
    `*` in an identity glob does not cross `/`."""
    with gateway.client(issue_client(identity)) as client:
        response = client.request(method, path, json=CHAT if method == "POST" else None)
    assert response.status_code == status
    if status == 200:
        assert [m["id"] for m in response.json()["data"]] == ["chat-default"]
    else:
        assert _error(response.content)["type"] == "permission_error"


# ------------------------------------------------------------------------------ no value echoed


@pytest.fixture
def traced(
    start_gateway: Callable[..., RunningGateway],
) -> tuple[RunningGateway, InMemorySpanExporter]:
    """A gateway whose spans land in memory, as an exporter would receive them."""
    spans = InMemorySpanExporter()
    return start_gateway(span_processor=SimpleSpanProcessor(spans)), spans


def _span_text(span: ReadableSpan) -> str:
    """Everything a span exports that could carry text: name, attributes, events, status."""
    parts = [span.name, repr(dict(span.attributes or {})), str(span.status.description)]
    for event in span.events:
        parts += [event.name, repr(dict(event.attributes or {}))]
    return "\n".join(parts)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "template"),
    [
        ("POST", f"/v1/chat/completions/{SENT}", CHAT, 404, "-"),
        ("GET", f"/{SENT}", None, 404, "-"),
        ("GET", f"/v1/chat/completions?user={SENT}", None, 405, "/v1/chat/completions"),
        ("POST", "/v1/chat/completions", {**CHAT, "model": SENT}, 404, "/v1/chat/completions"),
        ("POST", f"/v1/chat/completions?x={SENT}", CHAT, 200, "/v1/chat/completions"),
    ],
    ids=["path-under-chat", "unknown-path", "query-on-405", "unknown-model", "query-on-200"],
)
def test_nothing_the_caller_sent_is_echoed(
    traced: tuple[RunningGateway, InMemorySpanExporter],
    billing: CertPair,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
    template: str,
) -> None:
    """The sent value is in no answer, log line or span (status included); the access log
    writes the route template, or "-" for a path that matched no route."""
    gateway, spans = traced
    with caplog.at_level(logging.DEBUG), gateway.client(billing) as client:
        response = client.request(method, path, json=body)
        deadline = time.monotonic() + 5  # the access line is written just after the answer
        while time.monotonic() < deadline and not any(
            r.name == "bastion.access" for r in caplog.records
        ):
            time.sleep(0.02)
    assert response.status_code == status
    if status != 200:
        error = _error(response.content)
        if body is not None and body.get("model") == SENT:
            assert error["param"] == "model"  # the field is named, its value is not
    answer = response.content.decode() + repr(dict(response.headers))
    assert SENT not in answer
    # The gateway's records (the test's own HTTP client logs the URL it was asked to send).
    lines = [r.getMessage() for r in caplog.records if not r.name.startswith("httpx2")]
    assert not [line for line in lines if SENT in line]
    access = [r.getMessage() for r in caplog.records if r.name == "bastion.access"]
    assert len(access) == 1
    assert f" {method} {template} " in access[0]
    exported = spans.get_finished_spans()
    assert not [s.name for s in exported if SENT in _span_text(s)]
    assert all(s.status.description is None for s in exported)


def test_span_of_a_refused_request_has_a_status_without_description(
    traced: tuple[RunningGateway, InMemorySpanExporter],
    issue_client: Callable[..., CertPair],
) -> None:
    """A request ended by an exception still ends its span, with no description in the status."""
    gateway, spans = traced
    with gateway.client(issue_client("svc/other")) as client:
        response = client.post("/v1/chat/completions", json={**CHAT, "model": "restricted"})
    assert response.status_code == 403
    request_spans = [s for s in spans.get_finished_spans() if s.name == "bastion.request"]
    assert len(request_spans) == 1
    assert request_spans[0].status.description is None
    assert request_spans[0].attributes["http.response.status_code"] == 403


# --------------------------------------------------------------------------- HTTP/1.1 framing


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"transfer-encoding: Chunked\r\ncontent-length: 0\r\n",
        b"Content-Length: 5\r\nContent-Length: 6\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
    ],
    ids=["cl-then-te", "te-then-cl", "lowercase", "two-content-lengths", "te-not-chunked"],
)
def test_ambiguous_framing_is_400_and_the_connection_closed(
    gateway: RunningGateway,
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    framing: bytes,
) -> None:
    """RFC 9112 §6.3: a request whose body length is ambiguous gets an OpenAI-shaped 400 and
    the connection is closed (a smuggled second request is never read); nothing is forwarded."""
    recording_upstream.reset()
    body = json.dumps(CHAT).encode()
    smuggled = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    with _tls_socket(gateway, billing) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n" + framing + b"\r\n" + chunked + smuggled
        )
        answer = _read_answer(sock)
    assert answer.status == 400
    assert _error(answer.body)["type"] == "invalid_request_error"
    assert answer.headers["connection"] == "close"
    assert answer.closed
    assert recording_upstream.received == []


# --------------------------------------------------------------------------- slow and idle peers


def _open_many(gateway: RunningGateway, cert: CertPair, count: int) -> list[ssl.SSLSocket]:
    return [_tls_socket(gateway, cert) for _ in range(count)]


def _all_closed_within(socks: list[ssl.SSLSocket], seconds: float) -> int:
    """How many of ``socks`` the peer closed within ``seconds`` (all waited on together)."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    closed = 0
    deadline = time.monotonic() + seconds
    while closed < len(socks) and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
            sock = key.fileobj
            assert isinstance(sock, ssl.SSLSocket)
            try:
                data = sock.recv(65536)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            except (ConnectionError, ssl.SSLError, OSError):
                data = b""
            if not data:
                selector.unregister(sock)
                closed += 1
    selector.close()
    return closed


@pytest.mark.parametrize(
    ("what", "sent"),
    [
        ("nothing", b""),
        ("half-a-header", b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: "),
    ],
    ids=["idle-after-handshake", "half-a-header"],
)
def test_slowloris_connections_are_dropped_after_the_header_timeout(
    start_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    what: str,
    sent: bytes,
) -> None:
    """300 connections that never finish their headers are all closed once
    server.header_read_timeout_s has passed, and a real caller is served meanwhile."""
    gateway = start_gateway(server={"header_read_timeout_s": 1.0})
    socks = _open_many(gateway, billing, 300)
    try:
        started = time.monotonic()
        for sock in socks:
            if sent:
                sock.sendall(sent)
        with gateway.client(billing) as client:
            assert client.get("/healthz").status_code == 200
        closed = _all_closed_within(socks, 1.0 + 10.0)
        elapsed = time.monotonic() - started
    finally:
        for sock in socks:
            sock.close()
    print(f"slowloris ({what}): {closed}/300 connections closed {elapsed:.2f} s after sending")
    assert closed == 300
    assert elapsed >= 0.9  # not before the deadline: the timeout, not something else, closed them


@pytest.mark.parametrize(
    "sent",
    [b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"],
    ids=["no-client-hello", "half-a-client-hello"],
)
def test_stalled_tls_handshakes_are_dropped_after_the_handshake_timeout(
    start_gateway: Callable[..., RunningGateway], sent: bytes
) -> None:
    """A TCP peer that never completes its TLS handshake is closed once
    server.tls_handshake_timeout_s has passed (asyncio's default would hold it 60 s)."""
    gateway = start_gateway(server={"tls_handshake_timeout_s": 1.0})
    with socket.create_connection(("127.0.0.1", gateway.server.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(sent)
        closed = _closed_by_peer(sock, 10.0)
        elapsed = time.monotonic() - started
    assert closed
    assert 0.9 <= elapsed < 1.0 + 3.0


def test_the_plain_ops_port_has_the_same_limits(
    start_gateway: Callable[..., RunningGateway],
) -> None:
    """The ops port (plain HTTP, for probes) drops half-sent headers at the header deadline and
    refuses ambiguous framing with a 400 and a closed connection, like the mTLS port."""
    gateway = start_gateway(server={"header_read_timeout_s": 1.0})
    port = gateway.server.ops_port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert _closed_by_peer(sock, 10.0)
        assert 0.9 <= time.monotonic() - started < 1.0 + 3.0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        answer = _read_answer(sock)
    assert answer.status == 400
    assert _error(answer.body)["code"] == "bad_http_framing"
    assert answer.closed


@pytest.mark.parametrize(
    "drip",
    [False, True],
    ids=["body-stalls", "body-drips-a-byte-at-a-time"],
)
def test_slow_bodies_are_dropped_after_the_body_timeout(
    start_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    caplog: pytest.LogCaptureFixture,
    drip: bool,
) -> None:
    """A body that stalls, or arrives a byte at a time (each read on time), is cut off at
    server.body_read_timeout_s with an OpenAI-shaped 408 and the connection closed: an overall
    deadline, not a per-read one; nothing is forwarded and no application error is logged."""
    recording_upstream.reset()
    gateway = start_gateway(server={"body_read_timeout_s": 1.0})
    body = json.dumps(CHAT).encode()
    with caplog.at_level(logging.INFO), _tls_socket(gateway, billing) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body[:5]
        )
        started = time.monotonic()
        if drip:  # one byte every 0.2 s would take several seconds; stop when answered
            for byte in body[5:-1]:
                if select.select([sock], [], [], 0.2)[0]:
                    break
                sock.sendall(bytes([byte]))
        answer = _read_answer(sock)
        elapsed = time.monotonic() - started
    assert answer.status == 408
    assert _error(answer.body)["code"] == "body_read_timeout"
    assert answer.closed
    assert 0.9 <= elapsed < 1.0 + 3.0
    assert recording_upstream.received == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_connections_over_the_cap_get_503_and_are_closed(
    start_gateway: Callable[..., RunningGateway], billing: CertPair
) -> None:
    """With server.max_connections open, one more connection gets an OpenAI-shaped 503 and is
    closed before any HTTP is read; once one closes, a new caller is served again."""
    gateway = start_gateway(server={"max_connections": 4})
    held = _open_many(gateway, billing, 4)
    try:
        time.sleep(0.2)  # the server has made all four connections
        with _tls_socket(gateway, billing) as extra:
            answer = _read_answer(extra)
        assert answer.status == 503
        assert _error(answer.body)["code"] == "too_many_connections"
        assert answer.closed
        held.pop().close()
        deadline = time.monotonic() + 5
        status = 0
        while time.monotonic() < deadline and status != 200:
            time.sleep(0.1)
            with _tls_socket(gateway, billing) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                status = _read_answer(sock).status
        assert status == 200
    finally:
        for sock in held:
            sock.close()


def test_limits_are_named_in_config() -> None:
    """Each edge limit is a named, typed config field with a documented default."""
    from gateway.config import ServerConfig

    defaults = ServerConfig()
    assert defaults.header_read_timeout_s == 10.0
    assert defaults.body_read_timeout_s == 30.0
    assert defaults.tls_handshake_timeout_s == 10.0
    assert defaults.keep_alive_timeout_s == 30.0
    assert defaults.max_connections == 1024
    assert defaults.shutdown_grace_s == 5.0
    with pytest.raises(ValueError, match="header_read_timeout_s"):
        ServerConfig(header_read_timeout_s=0)
