"""mTLS: only the configured client identities (default: the gateway's) may call the worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pki.tls import client_context
from tests.fixtures.pki import CertPair, TestPKI
from tests.worker.worker_support import RunningWorker, chat_body, run_worker, worker_config


@pytest.fixture(scope="module")
def tls_worker(tiny_model_dir: Path, test_pki: TestPKI) -> Iterator[RunningWorker]:
    server = {
        "host": "127.0.0.1",
        "port": 0,
        "tls": {
            "cert": str(test_pki.server.cert),
            "key": str(test_pki.server.key),
            "ca": str(test_pki.ca_cert),
            "crl": str(test_pki.crl),
            "trust_domain": "bastion.internal",
        },
    }
    with run_worker(worker_config(tiny_model_dir, server=server), scheme="https") as worker:
        yield worker


def _client(worker: RunningWorker, pki: TestPKI, pair: CertPair | None) -> httpx.Client:
    kwargs: dict[str, Any] = {}
    if pair is not None:
        kwargs = {"cert": pair.cert, "key": pair.key}
    context = client_context(ca=pki.ca_cert, **kwargs)
    return httpx.Client(base_url=worker.url, verify=context, timeout=30.0)


def test_gateway_identity_may_generate(tls_worker: RunningWorker, test_pki: TestPKI) -> None:
    """The gateway's client certificate gets completions over mTLS."""
    with _client(tls_worker, test_pki, test_pki.gateway_client) as client:
        response = client.post("/v1/chat/completions", json=chat_body("Hi", max_tokens=3))
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] <= 3


@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/v1/models", "/metrics"], ids=["chat", "models", "metrics"]
)
def test_other_identities_are_forbidden(
    tls_worker: RunningWorker, test_pki: TestPKI, path: str
) -> None:
    """A valid certificate of another workload gets 403 in the OpenAI error shape, on any path."""
    other = test_pki.client("svc/billing")
    with _client(tls_worker, test_pki, other) as client:
        if path.startswith("/v1/chat"):
            response = client.post(path, json=chat_body("Hi", max_tokens=3))
        else:
            response = client.get(path)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_no_client_certificate_is_refused(tls_worker: RunningWorker, test_pki: TestPKI) -> None:
    """Without a client certificate the TLS handshake fails: no HTTP response at all."""
    with (
        _client(tls_worker, test_pki, None) as client,
        pytest.raises(httpx.TransportError),
    ):
        client.get("/v1/models")
