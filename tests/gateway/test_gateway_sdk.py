"""The real openai SDK, with a client certificate, through Bastion to the recording upstream."""

from __future__ import annotations

import openai
import pytest

from tests.fixtures.pki import CertPair
from tests.fixtures.upstream import RecordingUpstream
from tests.gateway.conftest import RunningGateway


def _sdk(gateway: RunningGateway, cert: CertPair) -> openai.OpenAI:
    http_client = openai.DefaultHttpxClient(verify=gateway.ssl_context(cert))
    return openai.OpenAI(
        base_url=gateway.url + "/v1", api_key="unused-mtls", http_client=http_client, max_retries=0
    )


def test_sdk_lists_models_and_completes(
    gateway: RunningGateway, billing: CertPair, recording_upstream: RecordingUpstream
) -> None:
    """models.list and chat.completions.create work unchanged over mTLS."""
    client = _sdk(gateway, billing)
    assert [m.id for m in client.models.list()] == ["chat-default"]
    completion = client.chat.completions.create(
        model="chat-default", messages=[{"role": "user", "content": "ping from the SDK"}]
    )
    assert completion.choices[0].message.content == "ping from the SDK"
    assert recording_upstream.received[0].body["messages"][0]["content"] == "ping from the SDK"


def test_sdk_streams(gateway: RunningGateway, billing: CertPair) -> None:
    """stream=True yields chunks whose deltas join to the answer."""
    client = _sdk(gateway, billing)
    stream = client.chat.completions.create(
        model="chat-default",
        messages=[{"role": "user", "content": "streaming through bastion"}],
        stream=True,
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "streaming through bastion"


def test_sdk_raises_typed_errors(gateway: RunningGateway, billing: CertPair) -> None:
    """Bastion's OpenAI-shaped errors surface as the SDK's typed exceptions."""
    client = _sdk(gateway, billing)
    with pytest.raises(openai.PermissionDeniedError) as caught:
        client.chat.completions.create(
            model="restricted", messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == 403
