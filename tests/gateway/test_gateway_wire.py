"""What leaves for a managed API is exactly what was scanned (issue 13, item 2): the egress scan
reads the bytes the upstream adapter makes (``Upstream.encode``, its own wire shape and config
fields included) and the adapter sends those same bytes. Through the real gateway (mTLS) with a
recording UbiAI-style upstream and the recording OpenAI-style one."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import gateway.pipeline._steps as steps
from gateway.upstreams.base import Endpoint
from gateway.upstreams.openai import OpenAIUpstream
from gateway.upstreams.ubiai import UbiAIUpstream
from tests.fixtures.pki import CertPair
from tests.fixtures.upstream import RecordingUpstream, serve_in_thread
from tests.gateway.conftest import RunningGateway

TOKEN = "tok3n-in-the-url"
SSN = "078-05-1120"
POLICY = """\
version: 1
name: managed-all
defaults: {route: managed, on_error: onprem}
routes:
  onprem: {kind: onprem, upstream: worker}
  managed: {kind: managed, upstream: managed}
rules:
  - id: everything-pseudonymized
    when: {entities: {any: ['*']}}
    then: {route: managed, sanitize: {default: pseudonymize}}
"""


@dataclass
class UbiAIRecorder:
    """A UbiAI-style API on loopback: ``POST /ubiai<token>``, answers ``{"output": ...}`` with
    the ``user_prompt`` it received; records the raw body bytes."""

    raw: list[bytes] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def call(request: Request) -> Response:
            raw = await request.body()
            with self._lock:
                self.raw.append(raw)
                self.paths.append(request.url.path)
            return JSONResponse({"output": json.loads(raw).get("user_prompt", "")})

        return Starlette(routes=[Route("/{path:path}", call, methods=["POST"])])


@pytest.fixture(scope="module")
def ubiai() -> Iterator[UbiAIRecorder]:
    recorder = UbiAIRecorder()
    url, server, thread = serve_in_thread(recorder.app())
    recorder.url = url.removesuffix("/v1") + "/ubiai/"
    yield recorder
    server.should_exit = True
    thread.join(5)


@pytest.fixture
def scanned(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every byte string the egress scan read, in order."""
    seen: list[bytes] = []
    real = steps.egress_texts

    def spy(serialized: bytes, **kwargs: Any) -> Any:
        seen.append(serialized)
        return real(serialized, **kwargs)

    monkeypatch.setattr(steps, "egress_texts", spy)
    return seen


def _gateway(
    start_gateway: Callable[..., RunningGateway],
    tmp_path: Path,
    managed: dict[str, Any],
    onprem_url: str,
) -> RunningGateway:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    key = tmp_path / "digest.key"
    key.write_text("k" * 48)
    return start_gateway(
        upstreams={"managed": managed, "worker": {"kind": "onprem", "base_url": onprem_url}},
        models={"chat-default": {"upstream": "worker"}},
        policy={"file": str(policy), "reload_interval_s": 5},
        audit={
            "backend": "sqlite",
            "path": str(tmp_path / "audit.db"),
            "digest_key_file": str(key),
        },
        signing={"key_file": str(tmp_path / "signing.key")},
    )


def _ubiai_config(ubiai: UbiAIRecorder, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("BASTION_TEST_UBIAI_TOKEN", TOKEN)
    return {
        "kind": "managed",
        "type": "ubiai",
        "base_url": ubiai.url,
        "api_key": {"env": "BASTION_TEST_UBIAI_TOKEN"},
        "ubiai": {"monitor_model": True, "knowledge_base_ids": ["kb-7"]},
    }


CONVERSATION = {
    "model": "chat-default",
    "messages": [
        {"role": "system", "content": "You help with letters."},
        {"role": "user", "content": "Draft a note to Maria Gonzalez about the meeting."},
        {"role": "assistant", "content": "Sure, what should it say?"},
        {"role": "user", "content": "Tell Maria Gonzalez it moved to Friday."},
    ],
}


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
def test_ubiai_sends_exactly_the_scanned_bytes(
    start_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    onprem_upstream: RecordingUpstream,
    ubiai: UbiAIRecorder,
    scanned: list[bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    stream: bool,
) -> None:
    """The UbiAI adapter reshapes the body (its own fields, config values, a fresh session id);
    the bytes that arrive are the bytes the egress scan read, byte for byte, and they hold the
    UbiAI shape, not the OpenAI one (so the scan did read the reshaped body)."""
    ubiai.raw.clear()
    gateway = _gateway(
        start_gateway, tmp_path, _ubiai_config(ubiai, monkeypatch), onprem_upstream.url
    )
    with gateway.client(billing) as client:
        response = client.post("/v1/chat/completions", json={**CONVERSATION, "stream": stream})
    assert response.status_code == 200, response.text
    assert response.headers["x-bastion-route"] == "managed"
    assert len(ubiai.raw) == 1
    assert len(scanned) == 1
    assert ubiai.raw[0] == scanned[0]
    sent = json.loads(ubiai.raw[0])
    assert set(sent) == {
        "input_text",
        "system_prompt",
        "user_prompt",
        "temperature",
        "monitor_model",
        "knowledge_base_ids",
        "session_id",
    }
    assert sent["knowledge_base_ids"] == ["kb-7"]
    assert "Gonzalez" not in ubiai.raw[0].decode()
    assert ubiai.paths[-1].endswith(TOKEN)
    assert "Maria Gonzalez it moved" in response.text  # restored from the pseudonyms
    assert onprem_upstream.received == []


def test_openai_sends_exactly_the_scanned_bytes(
    start_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    onprem_upstream: RecordingUpstream,
    scanned: list[bytes],
    tmp_path: Path,
) -> None:
    """The same for the OpenAI adapter: the recorded request body is the scanned bytes."""
    managed = {"kind": "managed", "base_url": recording_upstream.url}
    gateway = _gateway(start_gateway, tmp_path, managed, onprem_upstream.url)
    with gateway.client(billing) as client:
        response = client.post("/v1/chat/completions", json=CONVERSATION)
    assert response.status_code == 200
    assert response.headers["x-bastion-route"] == "managed"
    assert [r.raw for r in recording_upstream.received] == scanned
    assert len(scanned) == 1


def _adds_ssn(real: Callable[..., bytes]) -> Callable[..., bytes]:
    def encode(self: Any, endpoint: Endpoint, body: Mapping[str, Any]) -> bytes:
        shaped = json.loads(real(self, endpoint, body))
        shaped["adapter_note"] = f"account holder ssn {SSN}"
        return json.dumps(shaped).encode()

    return encode


ADAPTERS = [("ubiai", UbiAIUpstream), ("openai", OpenAIUpstream)]


@pytest.mark.parametrize(("kind", "adapter"), ADAPTERS, ids=[a[0] for a in ADAPTERS])
def test_an_ssn_added_by_the_adapter_fails_closed(
    start_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    onprem_upstream: RecordingUpstream,
    ubiai: UbiAIRecorder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    adapter: Any,
) -> None:
    """An adapter (or its config) that adds a field holding an SSN while shaping the wire body:
    the scan reads the adapter's bytes, so the call fails closed on-prem and the managed API
    gets nothing."""
    ubiai.raw.clear()
    monkeypatch.setattr(adapter, "encode", _adds_ssn(adapter.encode))
    managed = (
        _ubiai_config(ubiai, monkeypatch)
        if kind == "ubiai"
        else {"kind": "managed", "base_url": recording_upstream.url}
    )
    gateway = _gateway(start_gateway, tmp_path, managed, onprem_upstream.url)
    with gateway.client(billing) as client:
        response = client.post("/v1/chat/completions", json=CONVERSATION)
    assert response.status_code == 200
    assert response.headers["x-bastion-route"] == "onprem"
    assert ubiai.raw == []
    assert recording_upstream.received == []
    assert len(onprem_upstream.received) == 1


IMAGE = "data:image/png;base64," + "iVBORw0KGgo" * 600  # longer than a text the gate reads


@pytest.mark.parametrize(
    ("binary", "route"),
    [("", "onprem"), ("refuse", "onprem"), ("allow", "managed")],
    ids=["default", "refuse", "allow"],
)
def test_binary_parts_go_managed_only_when_the_route_allows(
    start_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    onprem_upstream: RecordingUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    binary: str,
    route: str,
) -> None:
    """An image part: refused for the managed route (fails closed on-prem) unless the policy's
    route says ``binary: allow``; then it leaves as it is, and the texts are still sanitized."""
    policy = POLICY.replace(
        "upstream: managed}",
        f"upstream: managed, binary: {binary}}}" if binary else "upstream: managed}",
    )
    monkeypatch.setattr(sys.modules[__name__], "POLICY", policy)
    managed = {"kind": "managed", "base_url": recording_upstream.url}
    gateway = _gateway(start_gateway, tmp_path, managed, onprem_upstream.url)
    parts = [
        {"type": "text", "text": "Describe this picture for Maria Gonzalez."},
        {"type": "image_url", "image_url": {"url": IMAGE}},
    ]
    body = {"model": "chat-default", "messages": [{"role": "user", "content": parts}]}
    with gateway.client(billing) as client:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["x-bastion-route"] == route
    if route == "managed":
        sent = recording_upstream.all_bytes().decode()
        assert IMAGE in sent
        assert "Gonzalez" not in sent
    else:
        assert recording_upstream.received == []
