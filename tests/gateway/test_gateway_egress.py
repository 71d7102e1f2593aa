"""The egress scan (issue 13, items 2 and 6): the last check reads every string of the exact
outgoing bytes without a list of fields, and Bastion's own placeholders never read as
entities."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.detect import Detector, TextRef
from gateway.detect.texts import RequestTexts
from gateway.policy import load_policy
from gateway.sanitize.egress import (
    MASK_CHAR,
    MAX_JSON_IN_STRING_DEPTH,
    egress_texts,
    long_numbers,
    mask_tokens,
    residual,
)
from tests.fixtures.pki import CertPair
from tests.fixtures.upstream import RecordingUpstream
from tests.gateway.conftest import RunningGateway
from tests.gateway.test_gateway_surface import default_gateway  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[2]
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


def _nested(depth: int, leaf: str) -> str:
    value: Any = leaf
    for _ in range(depth):
        value = json.dumps({"inner": value})
    return str(value)


def test_egress_texts_read_every_string_but_the_model_and_schema_words() -> None:
    """Every caller string is read (values, unknown keys, JSON inside strings, twice nested);
    the top-level model value and the schema's own words (field names, enum values) are not."""
    body = {
        "model": "upstream-secret-model-name",
        "messages": [{"role": "user", "content": "hello"}],
        "some_future_field": {"caller key": ["deep value"]},
        "tool_choice": "auto",
        "metadata": {"blob": _nested(2, "inside twice")},
    }
    texts = {ref.text for ref in egress_texts(json.dumps(body).encode())}
    assert {"hello", "caller key", "deep value", "inside twice"} <= texts
    assert "some_future_field" in texts  # not a schema word: an unknown key is read too
    assert not texts & {"upstream-secret-model-name", "user", "auto", "role", "messages"}


def test_egress_json_in_strings_is_bounded() -> None:
    """JSON inside strings is decoded at most MAX_JSON_IN_STRING_DEPTH levels deep; deeper, the
    string is still read raw (so a value in it is still seen by the detector)."""
    blob = _nested(MAX_JSON_IN_STRING_DEPTH + 2, "bottom")
    texts = [ref.text for ref in egress_texts(json.dumps({"user": blob}).encode())]
    assert "bottom" not in texts
    assert any("bottom" in t for t in texts)


def test_egress_known_clean_strings_are_not_read_twice() -> None:
    """A string the detector already read verbatim with nothing found is skipped."""
    body = json.dumps({"user": "already read", "stop": "new text"}).encode()
    assert [r.text for r in egress_texts(body, known_clean={"already read"})] == ["new text"]


def test_mask_tokens_blanks_exactly_the_tokens() -> None:
    """Only this request's replacement strings are masked (any case), keeping offsets."""
    texts = [TextRef("a", "patient ID medical_record_number_bvdmhfzq, PERSON_kqzrtxwb")]
    masked = mask_tokens(texts, {"MEDICAL_RECORD_NUMBER_bvdmhfzq"})
    assert masked[0].text == "patient ID " + MASK_CHAR * 30 + ", PERSON_kqzrtxwb"
    assert len(masked[0].text) == len(texts[0].text)


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector(load_policy(ROOT / "policies" / "default.yaml").detection)


def test_placeholder_pieces_are_not_entities(detector: Detector) -> None:
    """Read raw, "ID" next to a placeholder is a PERSON (the false positive issue 13 saw); with
    Bastion's tokens masked, nothing is left above the threshold."""
    token = "MEDICAL_RECORD_NUMBER_bvdmhfzq"
    texts = [TextRef("messages[0].content", f"Summarize the chart for patient ID {token} please.")]
    assert residual(detector.analyze(texts), texts, 0.5) != []
    masked = mask_tokens(texts, {token})
    assert residual(detector.analyze(masked), masked, 0.5) == []


def test_egress_scan_needs_no_field_list(
    default_gateway: Callable[..., RunningGateway],  # noqa: F811 - the imported fixture
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    onprem_upstream: RecordingUpstream,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With text extraction blinded (as if a field had no role), detection sees nothing and the
    policy says managed, yet the egress scan of the outgoing bytes finds the SSN and the call
    fails closed on-prem: the managed upstream gets nothing."""
    import gateway.pipeline._steps as steps

    monkeypatch.setattr(steps, "read_request", lambda typed: RequestTexts((), ()))
    gateway = default_gateway()
    with gateway.client(billing) as client:
        response = client.post(
            "/v1/chat/completions",
            json={
                "model": "chat-default",
                "messages": [{"role": "user", "content": "My SSN is 078-05-1120."}],
            },
        )
    assert response.status_code == 200
    assert response.headers["x-bastion-route"] == "onprem"
    assert recording_upstream.received == []
    assert len(onprem_upstream.received) == 1


def test_placeholders_do_not_fail_closed_end_to_end(
    default_gateway: Callable[..., RunningGateway],  # noqa: F811 - the imported fixture
    billing: CertPair,
    recording_upstream: RecordingUpstream,
    tmp_path: Path,
) -> None:
    """Under a pseudonymize-everything policy, a medical record number next to "patient ID"
    goes managed as placeholders (not on-prem by a placeholder false positive), every time,
    and the caller gets the original back."""
    policy = tmp_path / "managed-all.yaml"
    policy.write_text(MANAGED_ALL)
    gateway = default_gateway(policy={"file": str(policy), "reload_interval_s": 5})
    text = "Summarize the chart for patient ID MRN-48392017 please."
    with gateway.client(billing) as client:
        for _ in range(3):
            response = client.post(
                "/v1/chat/completions",
                json={"model": "chat-default", "messages": [{"role": "user", "content": text}]},
            )
            assert response.status_code == 200
            assert response.headers["x-bastion-route"] == "openai"
            assert response.json()["choices"][0]["message"]["content"] == text
    assert "48392017" not in recording_upstream.all_bytes().decode()


def test_pipeline_public_surface_is_pinned() -> None:
    """gateway.pipeline names what other packages may use (the steps stay private), as httpx
    pins its __all__."""
    import gateway.pipeline as pipeline

    assert sorted(pipeline.__all__) == [
        "AuditSink",
        "NullRestorer",
        "RequestContext",
        "Restorer",
        "RoutedRequest",
        "Router",
        "handle_completion",
        "identify",
        "read_json_body",
        "stream_events",
    ]
    assert all(hasattr(pipeline, name) for name in pipeline.__all__)


LONG_NUMBERS = [
    ("seed-card", {"seed": 4111111111111111}, ["{0}"]),
    ("ssn-token-id", {"prompt": [219099999]}, ["{0}[0]"]),
    ("in-json-string", {"tools": [{"args": '{"n": 78051120}'}]}, ["{0}[0]{0}#{0}"]),
    ("float", {"x": 12345678.5}, ["{0}"]),
    ("short-numbers-pass", {"max_tokens": 4096, "seed": 1234567, "t": 0.7, "b": True}, []),
]


@pytest.mark.parametrize(
    ("body", "paths"), [r[1:] for r in LONG_NUMBERS], ids=[r[0] for r in LONG_NUMBERS]
)
def test_long_numbers_are_named(body: dict[str, Any], paths: list[str]) -> None:
    """Every JSON number of 8+ digits, JSON inside strings included, is named (the scan fails
    closed on it); shorter numbers and booleans are not."""
    assert sorted(long_numbers(json.dumps(body).encode())) == sorted(paths)


def test_known_clean_strings_are_still_read_decoded() -> None:
    """A string detection read verbatim is skipped, but its HTML-entity, percent and \\uXXXX
    decodings are read (detection saw only the encoded form)."""
    encoded = "ssn &#x30;&#x37;&#x38; %31%31 \\u0032"
    texts = [
        r.text for r in egress_texts(json.dumps({"user": encoded}).encode(), known_clean={encoded})
    ]
    assert encoded not in texts
    assert "ssn 078 11 2" in texts
