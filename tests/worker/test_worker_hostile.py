"""Hostile callers against the real worker (issue 14): every refusal is a 4xx in the OpenAI error
shape that names the field, never the value; a client that goes away is cancelled cleanly.

Raw sockets send what an HTTP client library would refuse or correct (a Content-Length the body
never reaches, a connection closed mid-request).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.worker.worker_support import RunningWorker, chat_body, run_worker, worker_config

SECRET = "patient-4411-jane-roe"


@pytest.fixture(scope="module")
def worker(tiny_model_dir: Path) -> Iterator[RunningWorker]:
    config = worker_config(tiny_model_dir, server=_server(max_body_bytes=16384))
    with run_worker(config) as running:
        yield running


def _server(**extra: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": 0, "insecure_plain_http": True, **extra}


@pytest.fixture
def client(worker: RunningWorker) -> Iterator[httpx.Client]:
    with worker.client() as c:
        yield c


def _assert_openai_error(response: httpx.Response, status: int, code: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert SECRET not in response.text


_JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path", "headers", "content", "status", "code"),
    [
        ("GET", f"/v1/chat/completions/{SECRET}", {}, b"", 404, "not_found"),
        ("GET", f"/{SECRET}", {}, b"", 404, "not_found"),
        ("GET", "/v1/chat/completions", {}, b"", 405, "method_not_allowed"),
        ("DELETE", "/v1/models", {}, b"", 405, "method_not_allowed"),
        ("PUT", "/healthz", {}, b"", 405, "method_not_allowed"),
        (
            "POST",
            "/v1/chat/completions",
            {"content-type": "text/plain"},
            b'{"model": "tiny"}',
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/v1/chat/completions",
            {"content-type": "application/x-www-form-urlencoded"},
            f"model=tiny&prompt={SECRET}".encode(),
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/v1/completions",
            {"content-type": "multipart/form-data; boundary=x"},
            b"--x--",
            415,
            "unsupported_media_type",
        ),
        ("POST", "/v1/chat/completions", {}, b'{"model": "tiny"}', 415, "unsupported_media_type"),
        (
            "POST",
            "/v1/chat/completions",
            {"content-type": "application/json; charset=latin-1"},
            b"{}",
            415,
            "unsupported_media_type",
        ),
        ("POST", "/v1/chat/completions", _JSON, b"[" * 5000 + b"]" * 5000, 400, "invalid_json"),
        (
            "POST",
            "/v1/chat/completions",
            _JSON,
            b'{"model": "tiny", "max_tokens": ' + b"9" * 5000 + b"}",
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/chat/completions",
            _JSON,
            b'{"model": "tiny", "temperature": Infinity, "messages": []}',
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/chat/completions",
            _JSON,
            b'{"model": "tiny", "temperature": NaN, "messages": []}',
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/chat/completions",
            _JSON,
            b'{"model":"tiny","messages":[{"role":"user","content":"\\ud800 x"}]}',
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/chat/completions",
            _JSON,
            b'{"model":"tiny","messages":[{"role":"user","content":"x"}],"seed":'
            + str(2**70).encode()
            + b"}",
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/chat/completions",
            _JSON,
            b'{"model":"tiny","messages":[{"role":"user","content":"x"}],"max_tokens":"8"}',
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/chat/completions",
            _JSON,
            b'{"model":"tiny","messages":[{"role":"user","content":"x"}],"stream":"yes"}',
            400,
            "invalid_request",
        ),
        ("POST", "/v1/chat/completions", _JSON, b"[1, 2]", 400, "invalid_request"),
        (
            "POST",
            "/v1/chat/completions",
            _JSON,
            b'{"model": "'
            + SECRET.encode()
            + b'", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "model_not_found",
        ),
        ("POST", "/v1/chat/completions", _JSON, b'{"x": "' + b"a" * 20000 + b'"}', 413, None),
    ],
    ids=[
        "unknown-subpath",
        "unknown-path",
        "get-on-post-route",
        "delete-models",
        "put-healthz",
        "text-plain",
        "form-urlencoded",
        "multipart",
        "no-content-type",
        "json-not-utf8",
        "nested-5000",
        "integer-5000-digits",
        "infinity",
        "nan",
        "lone-surrogate",
        "seed-over-64-bits",
        "max-tokens-string",
        "stream-string",
        "top-level-array",
        "unknown-model-not-echoed",
        "body-over-limit",
    ],
)
def test_hostile_requests_get_openai_errors(
    client: httpx.Client,
    method: str,
    path: str,
    headers: dict[str, str],
    content: bytes,
    status: int,
    code: str | None,
) -> None:
    """Each hostile request is answered with its 4xx in the OpenAI error shape, no value echoed."""
    response = client.request(method, path, headers=headers, content=content)
    _assert_openai_error(response, status, code or "request_too_large")
    if status == 405:
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert allowed & {"GET", "POST"}
        assert method not in allowed


def _raw(worker: RunningWorker, data: bytes, *, read: bool = True) -> bytes:
    parts = urlsplit(worker.url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), 10) as sock:
        sock.sendall(data)
        if not read:
            return b""
        chunks = []
        sock.settimeout(10)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_declared_oversized_body_is_refused_before_it_is_read(worker: RunningWorker) -> None:
    """A Content-Length over server.max_body_bytes is 413 at once (the body never arrives)."""
    answer = _raw(
        worker,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: w\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000000\r\n\r\n{",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in head.lower()
    assert b'"code":"request_too_large"' in body


def test_client_disconnect_cancels_cleanly(
    worker: RunningWorker, caplog: pytest.LogCaptureFixture
) -> None:
    """A caller that sends a long request and leaves frees its row, with no error logged."""
    import json

    body = json.dumps(chat_body("Hello " + SECRET, max_tokens=400)).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: w\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            _raw(worker, request, read=False)  # closed right after sending
        time.sleep(0.3)
        worker.wait_idle()
        with worker.client() as c:  # the worker still serves
            assert (
                c.post("/v1/chat/completions", json=chat_body("Hi", max_tokens=2)).status_code
                == 200
            )
    bad = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not bad, [r.getMessage() for r in bad]
    assert all(SECRET not in r.getMessage() for r in caplog.records)
