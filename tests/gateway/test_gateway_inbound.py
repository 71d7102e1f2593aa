"""Hostile request bodies (issue 14, inbound): every way a body can fail to parse or validate
is an OpenAI-shaped 4xx, decided before the audit trail's decision record, naming the field and
never echoing the value. Bodies a client library would refuse to send go over a raw mTLS
socket."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import AuditConfig, open_store
from tests.fixtures.pki import CertPair
from tests.fixtures.upstream import RecordingUpstream
from tests.gateway.conftest import RunningGateway
from tests.gateway.test_gateway_surface import default_gateway  # noqa: F401 - a fixture

HEAD = b'{"model":"chat-default","messages":[{"role":"user","content":"hi"}]'
SECRETISH = "078-05-1120"


def _raw_post(gateway: RunningGateway, cert: CertPair, body: bytes) -> tuple[int, bytes]:
    """POST ``body`` as sent, over mTLS, and return (status, response body)."""
    context: ssl.SSLContext = gateway.ssl_context(cert)
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
        "Content-Type: application/json\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    chunks = []
    with (
        socket.create_connection(("127.0.0.1", gateway.server.port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(head + body)
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    status_line, _, rest = response.partition(b"\r\n")
    _headers, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), payload


def _with(tail: bytes) -> bytes:
    return HEAD + b"," + tail + b"}"


CASES: list[tuple[str, bytes, int, str | None]] = [
    ("int-5000-digits", _with(b'"max_tokens":' + b"1" * 5000), 400, None),
    ("int-40-digits-seed", _with(b'"seed":' + b"9" * 40), 400, None),
    ("nested-5000-arrays", _with(b'"stop":' + b"[" * 5000 + b"]" * 5000), 400, None),
    ("nested-100-objects", _with(b'"metadata":' + b'{"a":' * 100 + b"1" + b"}" * 100), 400, None),
    (
        "lone-surrogate-content",
        b'{"model":"chat-default","messages":[{"role":"user","content":"a\\ud800b"}]}',
        400,
        "messages[0].content",
    ),
    ("lone-surrogate-key", _with(b'"metadata":{"\\udfff":"x"}'), 400, "metadata.?"),
    ("infinity", _with(b'"temperature":Infinity'), 400, None),
    ("minus-infinity", _with(b'"temperature":-Infinity'), 400, None),
    ("nan", _with(b'"top_p":NaN'), 400, None),
    ("float-overflow", _with(b'"temperature":1e999'), 400, None),
    ("stream-yes", _with(b'"stream":"yes"'), 400, "stream"),
    ("max-tokens-string", _with(b'"max_tokens":"8"'), 400, "max_tokens"),
    ("max-tokens-bool", _with(b'"max_tokens":true'), 400, "max_tokens"),
    ("n-float", _with(b'"n":1.0'), 400, "n"),
    ("tools-string", _with(b'"tools":"get_weather"'), 400, "tools"),
    (
        "tool-choice-unknown",
        _with(b'"tool_choice":"' + SECRETISH.encode() + b'"'),
        400,
        "tool_choice",
    ),
    (
        "role-unknown",
        b'{"model":"chat-default","messages":[{"role":"'
        + SECRETISH.encode()
        + b'","content":"x"}]}',
        400,
        "messages[0].role",
    ),
    ("model-not-a-string", b'{"model":12345678901,"messages":[]}', 400, "model"),
    (
        "model-unknown-not-echoed",
        b'{"model":"' + SECRETISH.encode() + b'","messages":[{"role":"user","content":"x"}]}',
        404,
        "model",
    ),
    (
        "unknown-field-not-named-when-not-a-name",
        _with(b'"' + SECRETISH.encode() + b'":1'),
        400,
        "?",
    ),
    (
        "not-utf8",
        b'{"model":"chat-default","messages":[{"role":"user","content":"\xff"}]}',
        400,
        None,
    ),
]


def _decisions(path: Path) -> int:
    store = open_store(AuditConfig(backend="sqlite", path=path), read_only=True)
    try:
        return sum(1 for r in store.records() if r.kind == "decision")
    finally:
        store.close()


@pytest.mark.parametrize(
    ("body", "status", "param"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_hostile_bodies_are_openai_shaped_4xx_before_any_record(
    default_gateway: Callable[..., RunningGateway],  # noqa: F811 - the imported fixture
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    onprem_upstream: RecordingUpstream,
    tmp_path: Path,
    body: bytes,
    status: int,
    param: str | None,
) -> None:
    """The body gets its 4xx in the OpenAI error shape (param names the field), the answer does
    not hold the value sent, nothing is forwarded and no decision record is written."""
    gateway = default_gateway()
    got, payload = _raw_post(gateway, billing, body)
    assert got == status, payload[:300]
    error: dict[str, Any] = json.loads(payload)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    assert SECRETISH.encode() not in payload
    assert b"1" * 40 not in payload
    assert b"9" * 40 not in payload
    assert recording_upstream.received == []
    assert onprem_upstream.received == []
    assert _decisions(tmp_path / "audit.db") == 0


def test_valid_body_after_hostile_ones_still_answers(
    default_gateway: Callable[..., RunningGateway],  # noqa: F811 - the imported fixture
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    tmp_path: Path,
) -> None:
    """After refusing hostile bodies the gateway serves a valid one (200, managed) and records
    exactly that one decision."""
    gateway = default_gateway()
    for _, body, _, _ in CASES[:4]:
        _raw_post(gateway, billing, body)
    status, payload = _raw_post(gateway, billing, HEAD + b"}")
    assert status == 200, payload[:300]
    assert len(recording_upstream.received) == 1
    assert _decisions(tmp_path / "audit.db") == 1
