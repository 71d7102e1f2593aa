"""The OpenAI-compatible API: bodies, limits, methods, errors, streaming, headers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import httpx2
import pytest

from tests.fixtures.pki import CertPair
from tests.fixtures.upstream import RecordingUpstream
from tests.gateway.conftest import RunningGateway

CHAT = {"model": "chat-default", "messages": [{"role": "user", "content": "hello there"}]}


def _error(response: httpx2.Response) -> dict[str, object]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("content", "headers", "status", "param"),
    [
        (b"{not json", {"content-type": "application/json"}, 400, None),
        (b"", {"content-type": "application/json"}, 400, None),
        (b"[1, 2]", {"content-type": "application/json"}, 400, None),
        (json.dumps({"messages": []}).encode(), {}, 400, "model"),
        (json.dumps({"model": "chat-default", "messages": []}).encode(), {}, 400, "messages"),
        (
            json.dumps(
                {"model": "chat-default", "messages": [{"role": "wizard", "content": "x"}]}
            ).encode(),
            {},
            400,
            "messages[0].role",
        ),
        (
            json.dumps(
                {"model": "chat-default", "messages": [{"role": "user", "content": 5}]}
            ).encode(),
            {},
            400,
            "messages[0].content",
        ),
        (json.dumps({**CHAT, "temperature": 9}).encode(), {}, 400, "temperature"),
        (json.dumps({**CHAT, "max_tokens": 10**6}).encode(), {}, 400, "max_tokens"),
        (json.dumps(CHAT).encode(), {"content-type": "text/plain"}, 400, None),
        (json.dumps({**CHAT, "model": "gpt-nope"}).encode(), {}, 404, "model"),
        (json.dumps({**CHAT, "model": "restricted"}).encode(), {}, 403, "model"),
    ],
    ids=[
        "malformed-json",
        "empty-body",
        "not-an-object",
        "missing-model",
        "no-messages",
        "bad-role",
        "content-wrong-type",
        "temperature-out-of-range",
        "max-tokens-over-limit",
        "wrong-content-type",
        "unknown-model",
        "model-not-permitted",
    ],
)
def test_bad_requests_get_openai_shaped_4xx(
    gateway: RunningGateway,
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    content: bytes,
    headers: dict[str, str],
    status: int,
    param: str | None,
) -> None:
    """Every malformed or unauthorized body gets a 4xx in the OpenAI error shape and nothing is forwarded."""
    with gateway.client(billing) as client:
        response = client.post(
            "/v1/chat/completions",
            content=content,
            headers={"content-type": "application/json", **headers},
        )
    assert response.status_code == status
    error = _error(response)
    if param is not None:
        assert error["param"] == param
    assert recording_upstream.received == []


def test_oversized_body_gets_413(
    start_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    recording_upstream: RecordingUpstream,
) -> None:
    """A body over limits.max_body_bytes is refused with 413 naming the limit."""
    gateway = start_gateway(limits={"max_body_bytes": 4096})
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 10_000}]}
    with gateway.client(billing) as client:
        response = client.post("/v1/chat/completions", json=big)
    assert response.status_code == 413
    assert "4096" in str(_error(response)["message"])
    assert recording_upstream.received == []


def test_too_many_messages_is_refused(
    start_gateway: Callable[..., RunningGateway], billing: CertPair
) -> None:
    """More messages than limits.max_messages is a 400 with code too_many_messages."""
    gateway = start_gateway(limits={"max_messages": 3})
    body = {**CHAT, "messages": [{"role": "user", "content": "hi"}] * 4}
    with gateway.client(billing) as client:
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert _error(response)["code"] == "too_many_messages"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/chat/completions", 405),
        ("PUT", "/v1/completions", 405),
        ("POST", "/v1/models", 405),
        ("GET", "/v1/nothing", 404),
    ],
    ids=["get-chat", "put-completions", "post-models", "unknown-path"],
)
def test_wrong_methods_and_paths(
    gateway: RunningGateway, billing: CertPair, method: str, path: str, status: int
) -> None:
    """Wrong methods get 405 and unknown paths 404, both OpenAI-shaped."""
    with gateway.client(billing) as client:
        response = client.request(method, path)
    assert response.status_code == status
    _error(response)


def test_chat_completion_carries_decision_headers(
    gateway: RunningGateway, billing: CertPair, recording_upstream: RecordingUpstream
) -> None:
    """The answer names route, decision id and policy version; the upstream gets its own model name."""
    with gateway.client(billing) as client:
        response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.headers["x-bastion-route"] == "local"
    assert response.headers["x-bastion-decision-id"]
    assert response.headers["x-bastion-policy-version"]
    assert response.json()["model"] == "chat-default"
    assert recording_upstream.received[0].body["model"] == "upstream-model"


def test_stream_passes_chunks_and_ends_with_done(
    gateway: RunningGateway, billing: CertPair
) -> None:
    """stream: true is answered as SSE, chunk by chunk, ending in data: [DONE]."""
    text = "a streamed answer of some length"
    body = {**CHAT, "stream": True, "messages": [{"role": "user", "content": text}]}
    with (
        gateway.client(billing) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    pieces = [json.loads(line[6:]) for line in lines[:-1]]
    assert len(pieces) > 3
    assert "".join(p["choices"][0]["delta"].get("content", "") for p in pieces) == text
    assert {p["model"] for p in pieces} == {"chat-default"}


def test_legacy_completions(gateway: RunningGateway, billing: CertPair) -> None:
    """POST /v1/completions forwards a prompt and returns the text_completion shape."""
    with gateway.client(billing) as client:
        response = client.post(
            "/v1/completions", json={"model": "chat-default", "prompt": "say hi"}
        )
    assert response.status_code == 200
    assert response.json()["choices"][0]["text"] == "say hi"


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [("fail", 502, "upstream_failed"), ("garbage", 502, "upstream_failed")],
    ids=["upstream-500", "upstream-garbage"],
)
def test_upstream_failures_are_mapped(
    gateway: RunningGateway,
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    mode: str,
    status: int,
    code: str,
) -> None:
    """Upstream failures become 502 in the OpenAI shape, never a 500 and never the upstream URL."""
    recording_upstream.mode = mode
    with gateway.client(billing) as client:
        response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == status
    error = _error(response)
    assert error["code"] == code
    assert "127.0.0.1" not in str(error["message"])


def test_upstream_timeout_is_504(
    start_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    recording_upstream: RecordingUpstream,
) -> None:
    """A slow upstream past its read timeout gives 504."""
    gateway = start_gateway(
        upstreams={
            "local": {
                "kind": "onprem",
                "base_url": recording_upstream.url,
                "timeout": {"read": 0.3},
            }
        }
    )
    recording_upstream.mode = "slow"
    recording_upstream.slow_seconds = 1.0
    with gateway.client(billing) as client:
        response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 504
    assert _error(response)["code"] == "upstream_timeout"


def test_circuit_opens_after_repeated_failures(
    start_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    recording_upstream: RecordingUpstream,
) -> None:
    """After failure_threshold consecutive failures the circuit opens: 503 with Retry-After, upstream not called."""
    gateway = start_gateway(
        upstreams={
            "local": {
                "kind": "onprem",
                "base_url": recording_upstream.url,
                "circuit": {"failure_threshold": 2, "reset_after_s": 60},
            }
        }
    )
    recording_upstream.mode = "fail"
    with gateway.client(billing) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 502
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 502
        calls = len(recording_upstream.received)
        response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert _error(response)["code"] == "upstream_circuit_open"
    assert len(recording_upstream.received) == calls


def test_managed_route_without_sanitizer_fails_closed(
    start_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    recording_upstream: RecordingUpstream,
) -> None:
    """With no policy/sanitizer configured, a managed upstream is never called."""
    gateway = start_gateway(
        upstreams={"local": {"kind": "managed", "base_url": recording_upstream.url}}
    )
    with gateway.client(billing) as client:
        response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 503
    assert recording_upstream.received == []


def test_ops_port_serves_health_and_metrics_without_tls(
    gateway: RunningGateway, billing: CertPair
) -> None:
    """The plain ops port answers /healthz, /readyz, /metrics and nothing else."""
    with gateway.client(billing) as client:
        client.post("/v1/chat/completions", json=CHAT)
    assert httpx2.get(gateway.ops_url + "/healthz").json() == {"status": "ok"}
    assert httpx2.get(gateway.ops_url + "/readyz").status_code == 200
    metrics = httpx2.get(gateway.ops_url + "/metrics").text
    assert "bastion_requests_total" in metrics
    assert 'identity="spiffe://bastion.internal/svc/billing"' in metrics
    assert httpx2.post(gateway.ops_url + "/v1/chat/completions", json=CHAT).status_code == 404


def test_openapi_document_is_served(gateway: RunningGateway, billing: CertPair) -> None:
    """GET /openapi.json describes the endpoints."""
    with gateway.client(billing) as client:
        doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert "/v1/chat/completions" in doc["paths"]


def test_access_log_has_no_prompt_text(
    gateway: RunningGateway, billing: CertPair, caplog: pytest.LogCaptureFixture
) -> None:
    """Log lines carry identity, route, status and latency, never the prompt."""
    secret_text = "my-very-private-prompt-text-4471"
    with caplog.at_level("DEBUG"), gateway.client(billing) as client:
        client.post(
            "/v1/chat/completions",
            json={**CHAT, "messages": [{"role": "user", "content": secret_text}]},
        )
        deadline = time.monotonic() + 5  # the access line is written just after the response
        while time.monotonic() < deadline and not any(
            r.name == "bastion.access" for r in caplog.records
        ):
            time.sleep(0.02)
    access = [r.getMessage() for r in caplog.records if r.name == "bastion.access"]
    assert any(
        "identity=spiffe://bastion.internal/svc/billing" in line and "status=200" in line
        for line in access
    )
    assert all(secret_text not in r.getMessage() for r in caplog.records)


def _pool(start_gateway: Callable[..., RunningGateway], *urls: str) -> RunningGateway:
    return start_gateway(upstreams={"local": {"kind": "onprem", "base_url": list(urls)}})


def test_pool_skips_a_busy_worker(
    start_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    onprem_upstream: RecordingUpstream,
) -> None:
    """A worker answering 429 is skipped for its Retry-After; the request is served by the other."""
    gateway = _pool(start_gateway, recording_upstream.url, onprem_upstream.url)
    recording_upstream.mode = "busy"
    with gateway.client(billing) as client:
        answers = [client.post("/v1/chat/completions", json=CHAT).status_code for _ in range(4)]
    assert answers == [200, 200, 200, 200]
    assert len(onprem_upstream.received) == 4
    assert len(recording_upstream.received) <= 1  # asked once, then skipped while busy


def test_pool_skips_a_worker_that_is_down(
    start_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    onprem_upstream: RecordingUpstream,
) -> None:
    """A worker whose port refuses connections is skipped; the request is served by the other."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    gateway = _pool(start_gateway, dead, onprem_upstream.url)
    with gateway.client(billing) as client:
        answers = [client.post("/v1/chat/completions", json=CHAT).status_code for _ in range(3)]
    assert answers == [200, 200, 200]
    assert len(onprem_upstream.received) == 3


def test_pool_all_busy_gives_429_with_retry_after(
    start_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    onprem_upstream: RecordingUpstream,
) -> None:
    """When every worker is at capacity the caller gets 429 with Retry-After, OpenAI-shaped."""
    gateway = _pool(start_gateway, recording_upstream.url, onprem_upstream.url)
    recording_upstream.mode = "busy"
    onprem_upstream.mode = "busy"
    with gateway.client(billing) as client:
        response = client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert _error(response)["code"] == "upstream_busy"


def test_per_identity_request_limit(
    start_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    issue_client: Callable[..., CertPair],
    recording_upstream: RecordingUpstream,
) -> None:
    """Past its requests/minute an identity gets 429 with Retry-After; other identities are unaffected."""
    gateway = start_gateway(
        rate_limits=[
            {"identity": "spiffe://bastion.internal/svc/billing", "requests_per_minute": 2}
        ]
    )
    other = issue_client("svc/reports")
    with gateway.client(billing) as client:
        codes = [client.post("/v1/chat/completions", json=CHAT).status_code for _ in range(3)]
        limited = client.post("/v1/chat/completions", json=CHAT)
    assert codes == [200, 200, 429]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert _error(limited)["code"] == "rate_limit_exceeded"
    assert limited.headers["x-bastion-decision-id"]  # audited
    assert len(recording_upstream.received) == 2
    with gateway.client(other) as client:
        assert client.post("/v1/chat/completions", json=CHAT).status_code == 200
    metrics = httpx2.get(gateway.ops_url + "/metrics").text
    assert (
        'bastion_rate_limited_total{identity="spiffe://bastion.internal/svc/billing"} 2.0'
        in metrics
    )


def test_per_identity_token_limit(
    start_gateway: Callable[..., RunningGateway], billing: CertPair
) -> None:
    """A tokens/minute budget refuses requests whose estimated tokens exceed what is left."""
    gateway = start_gateway(
        rate_limits=[{"identity": "spiffe://bastion.internal/svc/*", "tokens_per_minute": 600}]
    )
    body = {**CHAT, "max_tokens": 250}
    with gateway.client(billing) as client:
        codes = [client.post("/v1/chat/completions", json=body).status_code for _ in range(3)]
        too_big = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 5000})
    assert codes == [200, 200, 429]
    assert too_big.status_code == 429
    assert "lower max_tokens" in str(_error(too_big)["message"])
