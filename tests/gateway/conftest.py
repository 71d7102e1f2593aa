"""Start a real gateway (uvicorn, mTLS on 127.0.0.1) against the recording upstream."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from ruamel.yaml import YAML

from gateway.config import load_config
from gateway.server import ServerThread, build_gateway
from pki.tls import client_context
from tests.audit.helpers import assert_no_text_in_trail, assert_trail_verifies
from tests.fixtures.pki import CertPair, TestPKI
from tests.fixtures.upstream import RecordingUpstream


@dataclass
class RunningGateway:
    server: ServerThread
    pki: TestPKI
    config_path: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.port}"

    @property
    def ops_url(self) -> str:
        return f"http://127.0.0.1:{self.server.ops_port}"

    def ssl_context(self, cert: CertPair | None) -> ssl.SSLContext:
        if cert is None:
            return client_context(ca=self.pki.ca_cert)
        return client_context(ca=self.pki.ca_cert, cert=cert.cert, key=cert.key)

    def client(self, cert: CertPair | None, **kwargs: Any) -> httpx2.Client:
        return httpx2.Client(base_url=self.url, verify=self.ssl_context(cert), timeout=30, **kwargs)


def gateway_config(pki: TestPKI, upstream_url: str, **sections: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 0, "ops_port": 0, "access_log": True},
        "tls": {
            "cert": str(pki.server.cert),
            "key": str(pki.server.key),
            "ca": str(pki.ca_cert),
            "crl": str(pki.crl),
            "trust_domain": "bastion.internal",
        },
        "upstreams": {
            "local": {
                "kind": "onprem",
                "base_url": upstream_url,
                "model_map": {"chat-default": "upstream-model"},
            },
        },
        "models": {"chat-default": {"upstream": "local"}, "restricted": {"upstream": "local"}},
        "authorization": [
            {"identity": "spiffe://bastion.internal/svc/*", "models": ["chat-default"]},
            {"identity": "spiffe://bastion.internal/svc/admin", "models": ["*"]},
        ],
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def _texts_received(*upstreams: RecordingUpstream) -> list[str]:
    texts: list[str] = []
    for upstream in upstreams:
        for received in upstream.received:
            for message in received.body.get("messages", []):
                content = message.get("content")
                if isinstance(content, str) and len(content) >= 8:
                    texts.append(content)
    return texts


@pytest.fixture
def start_gateway(
    test_pki: TestPKI,
    recording_upstream: RecordingUpstream,
    onprem_upstream: RecordingUpstream,
    tmp_path: Path,
) -> Iterator[Callable[..., RunningGateway]]:
    """Start gateways; on teardown stop them and check every audit trail they wrote: it
    verifies (chain, signatures, covered by the close checkpoint) and holds no prompt text."""
    started: list[ServerThread] = []
    trails: list[Path] = []

    def start(span_processor: Any = None, **sections: Any) -> RunningGateway:
        path = tmp_path / f"gateway-{len(started)}.yaml"
        with path.open("w") as handle:
            YAML().dump(gateway_config(test_pki, recording_upstream.url, **sections), handle)
        config = load_config(path)
        if config.audit is not None and config.audit.path is not None:
            trails.append(config.audit.path)
        gateway = build_gateway(config, span_processor=span_processor)
        server = ServerThread(gateway).start()
        started.append(server)
        return RunningGateway(server, test_pki, path)

    yield start
    for server in started:
        server.stop()
    texts = _texts_received(recording_upstream, onprem_upstream)
    for trail in trails:
        if trail.exists():
            assert_trail_verifies(trail)
            assert_no_text_in_trail(trail, texts)


@pytest.fixture
def gateway(start_gateway: Callable[..., RunningGateway]) -> RunningGateway:
    """A gateway with default config (one on-prem upstream = the recording server)."""
    return start_gateway()


@pytest.fixture(scope="session")
def billing(test_pki: TestPKI) -> CertPair:
    """A client identity authorized for chat-default."""
    return test_pki.client("svc/billing")
