"""Policy routing end to end: real detection, the policy engine, sanitization, restore, audit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.detect.pii_match import leaked_values, load_corpus
from tests.fixtures.pki import CertPair
from tests.fixtures.upstream import RecordingUpstream
from tests.gateway.conftest import RunningGateway

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_POLICY = ROOT / "policies" / "default.yaml"

MANAGED_ALL = """\
version: 1
name: managed-all
defaults: {route: openai, on_error: onprem}
routes:
  onprem: {kind: onprem, upstream: worker}
  openai: {kind: managed, upstream: openai, fallback: onprem}
rules:
  - id: everything-pseudonymized
    when: {entities: {any: ['*']}}
    then: {route: openai, sanitize: {default: pseudonymize}}
"""


@pytest.fixture
def policy_gateway(
    start_gateway: Callable[..., RunningGateway],
    recording_upstream: RecordingUpstream,
    onprem_upstream: RecordingUpstream,
    tmp_path: Path,
) -> Callable[..., RunningGateway]:
    """A gateway with a policy, a managed upstream (recording) and an on-prem one (recording)."""

    def start(
        policy: Path | str = DEFAULT_POLICY, span_processor: Any = None, **sections: Any
    ) -> RunningGateway:
        if isinstance(policy, str):
            path = tmp_path / "policy.yaml"
            path.write_text(policy)
            policy = path
        key = tmp_path / "digest.key"
        key.write_text("k" * 48)
        return start_gateway(
            span_processor=span_processor,
            upstreams={
                "openai": {"kind": "managed", "base_url": recording_upstream.url},
                "worker": {"kind": "onprem", "base_url": onprem_upstream.url},
            },
            models={"chat-default": {"upstream": "worker"}, "restricted": {"upstream": "worker"}},
            policy={"file": str(policy), "reload_interval_s": 0.2},
            audit={
                "backend": "sqlite",
                "path": str(tmp_path / "audit.db"),
                "digest_key_file": str(key),
            },
            signing={"key_file": str(tmp_path / "signing.key")},
            **sections,
        )

    return start


def _chat(gateway: RunningGateway, cert: CertPair, content: str, **extra: Any) -> httpx2.Response:
    with gateway.client(cert) as client:
        return client.post(
            "/v1/chat/completions",
            json={
                "model": "chat-default",
                "messages": [{"role": "user", "content": content}],
                **extra,
            },
        )


@pytest.mark.parametrize(
    ("text", "route", "status"),
    [
        ("What is the capital of France?", "openai", 200),
        ("My SSN is 078-05-1120, can you check my benefits?", "onprem", 200),
        (
            "Use AKIAIOSFODNN7EXAMPLE with secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "secrets-deny",
            403,
        ),
    ],
    ids=["clean-to-managed", "ssn-to-onprem", "secret-denied"],
)
def test_default_policy_routes(
    policy_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    onprem_upstream: RecordingUpstream,
    text: str,
    route: str,
    status: int,
) -> None:
    """The default policy sends clean text to the managed API, identifiers on-prem, and denies secrets."""
    gateway = policy_gateway()
    response = _chat(gateway, billing, text)
    assert response.status_code == status, response.text
    assert response.headers["x-bastion-policy-version"].startswith("sha256:")
    assert response.headers["x-bastion-decision-id"]
    if status == 200:
        assert response.headers["x-bastion-route"] == route
        assert response.json()["choices"][0]["message"]["content"] == text
    else:
        assert response.json()["error"]["code"] == "policy_denied"
    managed_bytes = recording_upstream.all_bytes().decode()
    if route != "openai":
        assert recording_upstream.received == []
    if status == 403:
        assert onprem_upstream.received == []
    assert "078-05-1120" not in managed_bytes


def test_names_are_pseudonymized_and_restored(
    policy_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    recording_upstream: RecordingUpstream,
) -> None:
    """A name goes to the managed API only as a pseudonym; the caller gets it back, streamed or not."""
    gateway = policy_gateway()
    text = "Please write a short thank-you note to Margaret Thornbury for her help."
    for stream in (False, True):
        recording_upstream.reset()
        with gateway.client(billing) as client:
            body = {
                "model": "chat-default",
                "messages": [{"role": "user", "content": text}],
                "stream": stream,
            }
            if stream:
                with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    lines = [
                        x
                        for x in response.iter_lines()
                        if x.startswith("data: ") and x != "data: [DONE]"
                    ]
                answer = "".join(
                    c["choices"][0]["delta"].get("content", "")
                    for c in map(lambda x: json.loads(x[6:]), lines)
                    if c.get("choices")
                )
                assert response.headers["x-bastion-route"] == "openai"
            else:
                response = client.post("/v1/chat/completions", json=body)
                answer = response.json()["choices"][0]["message"]["content"]
        sent = recording_upstream.all_bytes().decode()
        assert "Thornbury" not in sent
        assert answer == text


def test_detector_failure_fails_closed_to_onprem(
    policy_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    onprem_upstream: RecordingUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If detection raises, nothing goes to the managed API: the policy's on_error (on-prem) applies."""
    from gateway.detect.pool import DetectionPool, WorkerFailed

    # Detection runs in worker processes: make the pool's answer the failure (a real worker
    # crash is tested in tests/detect/test_detect_pool.py).
    async def broken(self: DetectionPool, *args: object) -> list[object]:
        raise WorkerFailed("the detection worker process died during this request")

    monkeypatch.setattr(DetectionPool, "analyze", broken)
    gateway = policy_gateway()
    response = _chat(gateway, billing, "What is the capital of France?")
    assert response.status_code == 200
    assert response.headers["x-bastion-route"] == "onprem"
    assert recording_upstream.received == []
    assert len(onprem_upstream.received) == 1


def test_residual_pii_after_sanitize_fails_closed(
    policy_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sanitizer that leaves the value in place is caught by the egress scan; the managed API gets nothing."""
    import gateway.pipeline._steps as steps
    from gateway.detect.texts import dump_request
    from gateway.sanitize.pseudonyms import PseudonymMap
    from gateway.sanitize.sanitizer import SanitizedRequest

    monkeypatch.setattr(
        steps,
        "sanitize_body",
        lambda body, *a, **k: SanitizedRequest(dump_request(body), PseudonymMap(), {}),
    )
    gateway = policy_gateway(MANAGED_ALL)
    response = _chat(gateway, billing, "Send the report to Margaret Thornbury at 12 Elm Street.")
    assert response.headers["x-bastion-route"] == "onprem"
    assert recording_upstream.received == []


@pytest.mark.parametrize(
    ("fallback", "status"), [(True, 200), (False, 502)], ids=["with-fallback", "without-fallback"]
)
def test_managed_failure_fallback(
    policy_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    onprem_upstream: RecordingUpstream,
    fallback: bool,
    status: int,
) -> None:
    """A failing managed API falls back on-prem only when the route allows it."""
    policy = MANAGED_ALL if fallback else MANAGED_ALL.replace(", fallback: onprem", "")
    gateway = policy_gateway(policy)
    recording_upstream.mode = "fail"
    response = _chat(gateway, billing, "What is the capital of France?")
    assert response.status_code == status
    assert len(onprem_upstream.received) == (1 if fallback else 0)


def test_onprem_failure_never_goes_managed(
    policy_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    onprem_upstream: RecordingUpstream,
) -> None:
    """When the on-prem worker fails, the request fails; the managed API is never tried."""
    gateway = policy_gateway()
    onprem_upstream.mode = "fail"
    response = _chat(gateway, billing, "My SSN is 078-05-1120.")
    assert response.status_code == 502
    assert recording_upstream.received == []


def test_broken_policy_at_reload_keeps_last_good(
    policy_gateway: Callable[..., RunningGateway], billing: CertPair, tmp_path: Path
) -> None:
    """A policy file broken while running is refused; requests keep the last good policy."""
    gateway = policy_gateway(MANAGED_ALL)
    version = _chat(gateway, billing, "hello").headers["x-bastion-policy-version"]
    (tmp_path / "policy.yaml").write_text(MANAGED_ALL.replace("rules:", "rulez:"))
    import time

    time.sleep(0.6)
    response = _chat(gateway, billing, "hello")
    assert response.status_code == 200
    assert response.headers["x-bastion-policy-version"] == version


def test_unwritable_audit_store_refuses_and_forwards_nothing(
    policy_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    onprem_upstream: RecordingUpstream,
    tmp_path: Path,
) -> None:
    """When the decision record cannot be written the caller gets 503 and no upstream sees the request."""
    import sqlite3

    gateway = policy_gateway()
    assert _chat(gateway, billing, "hello").status_code == 200
    recording_upstream.reset()
    onprem_upstream.reset()
    # Another connection holds the write lock: the trail cannot commit.
    blocker = sqlite3.connect(tmp_path / "audit.db", timeout=0.1)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        response = _chat(gateway, billing, "hello again")
    finally:
        blocker.rollback()
        blocker.close()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "audit_unavailable"
    assert recording_upstream.received == []
    assert onprem_upstream.received == []
    assert _chat(gateway, billing, "and back").status_code == 200


CORPUS = load_corpus() or []


@pytest.mark.slow
@pytest.mark.skipif(not CORPUS, reason="../shared/pii_dev/pii_dev.jsonl is not present")
def test_pii_corpus_never_reaches_managed_api_and_answers_are_restored(
    policy_gateway: Callable[..., RunningGateway],
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every pii_dev item, through a pseudonymize-everything managed policy: no structured ID or
    secret reaches the managed API, every managed answer equals the caller's last message, and
    no value of any kind appears in logs, trace spans or /metrics."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = InMemorySpanExporter()
    gateway = policy_gateway(MANAGED_ALL, span_processor=SimpleSpanProcessor(spans))
    leaks: list[str] = []
    wrong: list[str] = []
    routes: dict[str, int] = {}
    with caplog.at_level("DEBUG"), gateway.client(billing) as client:
        for item in CORPUS:
            for stream in (False, True) if item.get("stream") else (False,):
                recording_upstream.reset()
                body = {**item["request"], "model": "chat-default", "stream": stream}
                if stream:
                    with client.stream("POST", "/v1/chat/completions", json=body) as response:
                        events = [
                            json.loads(x[6:])
                            for x in response.iter_lines()
                            if x.startswith("data: {")
                        ]
                    answer = "".join(
                        e["choices"][0]["delta"].get("content") or ""
                        for e in events
                        if e.get("choices")
                    )
                else:
                    response = client.post("/v1/chat/completions", json=body)
                    answer = (
                        response.json()["choices"][0]["message"]["content"]
                        if response.status_code == 200
                        else None
                    )
                route = response.headers.get("x-bastion-route", "?")
                routes[route] = routes.get(route, 0) + 1
                sent = recording_upstream.all_bytes().decode()
                leaked = leaked_values(item, sent, groups=("structured_id", "secret"))
                if leaked:
                    leaks.append(f"{item['id']}: {[v['class'] for v in leaked]}")
                if route == "openai" and answer != item["expected_echo"]:
                    wrong.append(item["id"])
        metrics = httpx2.get(gateway.ops_url + "/metrics").text
    assert leaks == []
    assert wrong == []
    assert routes.get("openai", 0) > 0.9 * sum(routes.values()), routes  # most went managed
    logs = "\n".join(r.getMessage() for r in caplog.records)
    span_text = "\n".join(span.to_json() for span in spans.get_finished_spans())
    assert spans.get_finished_spans()
    for where, blob in (("logs", logs), ("spans", span_text), ("metrics", metrics)):
        found = [f"{item['id']}:{v['class']}" for item in CORPUS for v in leaked_values(item, blob)]
        assert found == [], f"values found in {where}"
