"""Detection's fair share through the real gateway (issue 14: a burst of large name-dense
requests from one caller made every caller wait and get 503 detector_busy).

Real mTLS, the real detection process pool, the default policy, recording upstreams.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2

from tests.fixtures.pki import CertPair, TestPKI
from tests.fixtures.upstream import RecordingUpstream
from tests.gateway.conftest import RunningGateway

ROOT = Path(__file__).resolve().parents[2]
HEAVY_TEXT = "Maria Lopez met Olaf Jensen and Ana Souza in Porto last week. " * 320  # ~20 k
LIGHT_TEXT = "Summarize the quarterly report in three bullets."


def _post(gateway: RunningGateway, cert: CertPair, content: str) -> httpx2.Response:
    with gateway.client(cert) as client:
        return client.post(
            "/v1/chat/completions",
            json={"model": "chat-default", "messages": [{"role": "user", "content": content}]},
        )


def test_heavy_caller_is_refused_past_its_share_while_a_light_caller_is_served(
    start_gateway: Callable[..., RunningGateway],
    test_pki: TestPKI,
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    onprem_upstream: RecordingUpstream,
    tmp_path: Path,
) -> None:
    """Eight concurrent ~20 k-character name-dense requests from one identity, with a share of
    30 k characters: the excess is refused at once with 503 detector_busy (OpenAI error shape,
    Retry-After, no text echoed), while another identity's clean request is answered 200."""
    key = tmp_path / "digest.key"
    key.write_text("k" * 48)
    sections: dict[str, Any] = {
        "upstreams": {
            "openai": {"kind": "managed", "base_url": recording_upstream.url},
            "worker": {"kind": "onprem", "base_url": onprem_upstream.url},
        },
        "models": {"chat-default": {"upstream": "worker"}},
        "policy": {"file": str(ROOT / "policies" / "default.yaml")},
        "audit": {
            "backend": "sqlite",
            "path": str(tmp_path / "audit.db"),
            "digest_key_file": str(key),
        },
        "signing": {"key_file": str(tmp_path / "signing.key")},
        "limits": {"detect_processes": 1, "detect_identity_max_chars": 30_000},
    }
    gateway = start_gateway(**sections)
    batch = test_pki.client("svc/batch")
    assert 15_000 < len(HEAVY_TEXT) < 30_000

    with ThreadPoolExecutor(max_workers=9) as pool:
        heavy = [pool.submit(_post, gateway, batch, HEAVY_TEXT) for _ in range(8)]
        light = pool.submit(_post, gateway, billing, LIGHT_TEXT).result()
        heavy_responses = [f.result() for f in heavy]

    assert light.status_code == 200, light.text
    statuses = sorted(r.status_code for r in heavy_responses)
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses
    refused = [r for r in heavy_responses if r.status_code == 503]
    assert refused, "the heavy caller was never held to its share"
    for response in refused:
        error = response.json()["error"]
        assert error["code"] == "detector_busy"
        assert "detect_identity_max_chars" in error["message"]
        assert "Maria" not in response.text
        assert response.headers.get("retry-after")
