"""Bad upstream answers through the real gateway (mTLS, the public HTTP API only): the caller gets
an OpenAI-shaped error, never a 500 or a silent empty answer, nothing it sent is echoed, and
/healthz keeps answering within 1 s while the bad answer is in flight (issue 14)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.fixtures.bad_upstream import BadUpstream
from tests.fixtures.pki import CertPair
from tests.fixtures.upstream import RecordingUpstream
from tests.gateway.conftest import RunningGateway
from tests.upstreams._support import PROMPT

CHAT: dict[str, Any] = {"model": "chat-default", "messages": [{"role": "user", "content": PROMPT}]}


def _start(
    start_gateway: Callable[..., RunningGateway], url: str, **upstream: Any
) -> RunningGateway:
    local = {"kind": "onprem", "base_url": url, "model_map": {"chat-default": "upstream-model"}}
    return start_gateway(upstreams={"local": {**local, **upstream}})


def _error(text: str) -> dict[str, Any]:
    error = json.loads(text)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error  # type: ignore[no-any-return]


# (mode, stream, HTTP status, error code, upstream overrides)
IN_FLIGHT: list[tuple[str, bool, int, str, dict[str, Any]]] = [
    ("huge_json", False, 502, "upstream_answer_too_large", {}),
    ("endless_lines", True, 502, "upstream_event_too_large", {}),
    ("endless_event", True, 502, "upstream_event_too_large", {}),
    ("drip_json", False, 504, "upstream_timeout", {"timeout": {"read": 10.0, "total": 3.0}}),
    # 16 MiB of valid events relayed as fast as they come, then the error event (200 started).
    ("many_events", True, 200, "upstream_answer_too_large", {}),
]


@pytest.mark.parametrize(
    ("mode", "stream", "status", "code", "overrides"),
    IN_FLIGHT,
    ids=[row[0] for row in IN_FLIGHT],
)
def test_bad_answer_is_an_openai_error_and_healthz_stays_fast(
    start_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    bad_upstream: BadUpstream,
    mode: str,
    stream: bool,
    status: int,
    code: str,
    overrides: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """While the gateway reads a huge, endless or dripping answer, /healthz answers within 1 s
    each time (bounded work per chunk, no blocked event loop); the caller then gets the bound's
    OpenAI-shaped error, and neither it nor any log line holds a byte of what it sent."""
    gateway = _start(start_gateway, bad_upstream.url(mode), **overrides)
    result: dict[str, httpx2.Response] = {}

    def call() -> None:
        with gateway.client(billing) as client:
            result["response"] = client.post(
                "/v1/chat/completions", json={**CHAT, "stream": stream}
            )

    caller = threading.Thread(target=call)
    latencies: list[float] = []
    with caplog.at_level("DEBUG"), httpx2.Client(base_url=gateway.ops_url, timeout=10) as ops:
        caller.start()
        while caller.is_alive() or not latencies:
            started = time.monotonic()
            assert ops.get("/healthz").status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)
        caller.join(60)
    assert all("PROMPT" not in record.getMessage() for record in caplog.records)
    response = result["response"]
    print(f"{mode}: {len(latencies)} /healthz polls, slowest {max(latencies) * 1000:.0f} ms")
    assert max(latencies) < 1.0, f"/healthz took {max(latencies):.2f} s with a bad answer in flight"
    assert response.status_code == status
    if status == 200:  # failed after the first event: the stream's last event is the error
        last = [line for line in response.text.splitlines() if line.startswith("data: ")][-1]
        assert _error(last[6:])["code"] == code
    else:
        assert _error(response.text)["code"] == code
    assert "PROMPT" not in response.text
    assert "127.0.0.1" not in response.text


def test_a_cut_stream_ends_with_an_error_event_not_done(
    start_gateway: Callable[..., RunningGateway], billing: CertPair, bad_upstream: BadUpstream
) -> None:
    """A stream closed without [DONE] or a finish_reason, after its first event: the caller has
    200 and the events so far, then an OpenAI-shaped error event, and no [DONE]."""
    gateway = _start(start_gateway, bad_upstream.url("no_done"))
    with gateway.client(billing) as client:
        response = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 200
    data = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert "[DONE]" not in data
    assert json.loads(data[0])["choices"]
    error = _error(data[-1])
    assert error["code"] == "upstream_failed"
    assert "cut" in error["message"]
    assert "PROMPT" not in response.text


@pytest.mark.parametrize("mode", ["html_200", "ok_json", "done_only"])
def test_a_stream_that_never_starts_is_a_502_before_the_first_byte(
    start_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    bad_upstream: BadUpstream,
    mode: str,
) -> None:
    """HTML, a JSON object, or only [DONE] for a stream request: the failure comes before the
    first byte, so the caller gets a plain 502 OpenAI error (where a policy's on-prem fallback
    would still apply), not 200 with an empty answer."""
    gateway = _start(start_gateway, bad_upstream.url(mode))
    with gateway.client(billing) as client:
        response = client.post("/v1/chat/completions", json={**CHAT, "stream": True})
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("application/json")
    assert _error(response.text)["code"] == "upstream_failed"
    assert "PROMPT" not in response.text


MANAGED_WITH_FALLBACK = """\
version: 1
name: managed-with-fallback
defaults: {route: managed, on_error: onprem}
routes:
  onprem: {kind: onprem, upstream: worker}
  managed: {kind: managed, upstream: managed, fallback: onprem}
rules:
  - id: everything-pseudonymized
    when: {entities: {any: ['*']}}
    then: {route: managed, sanitize: {default: pseudonymize}}
"""


@pytest.mark.parametrize("mode", ["html_200", "endless_lines", "done_only"])
def test_a_managed_stream_failing_before_its_first_event_falls_back_on_prem(
    start_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    bad_upstream: BadUpstream,
    onprem_upstream: RecordingUpstream,
    tmp_path: Path,
    mode: str,
) -> None:
    """Because ``stream()`` reads up to the first event, a managed stream that fails before it
    (HTML, an over-limit event, only [DONE]) still falls back on-prem: the caller gets the
    worker's whole answer, ending with [DONE]."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(MANAGED_WITH_FALLBACK)
    key = tmp_path / "digest.key"
    key.write_text("k" * 48)
    gateway = start_gateway(
        upstreams={
            "managed": {"kind": "managed", "base_url": bad_upstream.url(mode)},
            "worker": {"kind": "onprem", "base_url": onprem_upstream.url},
        },
        models={"chat-default": {"upstream": "worker"}, "restricted": {"upstream": "worker"}},
        policy={"file": str(policy)},
        audit={
            "backend": "sqlite",
            "path": str(tmp_path / "audit.db"),
            "digest_key_file": str(key),
        },
        signing={"key_file": str(tmp_path / "signing.key")},
    )
    question = "What is the capital of France?"
    body = {"model": "chat-default", "messages": [{"role": "user", "content": question}]}
    with gateway.client(billing) as client:
        response = client.post("/v1/chat/completions", json={**body, "stream": True})
    assert response.status_code == 200
    assert response.headers["x-bastion-route"].endswith("->fallback:worker")
    assert len(bad_upstream.served_for(mode)) == 1
    assert len(onprem_upstream.received) == 1
    data = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    text = "".join(json.loads(d)["choices"][0]["delta"].get("content") or "" for d in data[:-1])
    assert text == question
