"""Sanitization operations, pseudonym maps and restore (whole texts, bodies, SSE streams)."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest

from gateway.detect import Detector, extract_texts
from gateway.policy.decision import Operation
from gateway.sanitize import (
    PLACEHOLDER_PATTERN,
    HashKeyMissing,
    PseudonymMap,
    SSERestorer,
    StreamRestorer,
    residual_findings,
    restore_response_body,
    restore_text,
    sanitize_body,
)
from pki.secret import Secret

SSN = "411-82-3285"
BODY: dict[str, Any] = {
    "model": "m",
    "messages": [
        {"role": "user", "content": f"My SSN is {SSN}, email jane.roe@example.com."},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": f"Repeat: {SSN} and jane.roe@example.com"},
    ],
}


def _sanitize(
    detector: Detector, body: dict[str, Any], ops: dict[str, Operation], **kw: Any
) -> Any:
    return sanitize_body(body, detector.analyze(extract_texts(body)), ops, **kw)


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        (Operation.REDACT, "My SSN is <US_SSN>,"),
        (Operation.MASK, "My SSN is ***-**-3285,"),
    ],
    ids=["redact", "mask"],
)
def test_operations_rewrite_values(detector: Detector, operation: Operation, expected: str) -> None:
    """redact writes <TYPE>; mask keeps separators and the last four characters."""
    result = _sanitize(detector, BODY, {"US_SSN": operation})
    assert result.body["messages"][0]["content"].startswith(expected)


def test_hash_is_keyed_and_stable(detector: Detector) -> None:
    """hash gives the same token for the same value and key, another for another key, and
    contains no digits."""
    one = _sanitize(detector, BODY, {"US_SSN": Operation.HASH}, hash_key=Secret("k1")).body
    two = _sanitize(detector, BODY, {"US_SSN": Operation.HASH}, hash_key=Secret("k1")).body
    other = _sanitize(detector, BODY, {"US_SSN": Operation.HASH}, hash_key=Secret("k2")).body
    token = re.search(r"US_SSN_h[a-p]{16}", one["messages"][0]["content"])
    assert token is not None
    assert token.group() in two["messages"][2]["content"]
    assert token.group() not in other["messages"][0]["content"]


def test_hash_without_key_fails_closed(detector: Detector) -> None:
    """Asking for hash with no HMAC key raises instead of sending the value."""
    with pytest.raises(HashKeyMissing):
        _sanitize(detector, BODY, {"US_SSN": Operation.HASH})


def test_pseudonyms_same_value_same_placeholder(detector: Detector) -> None:
    """Types without an operation are pseudonymized; one value gets one placeholder in a request,
    and the original appears nowhere in the sanitized body."""
    result = _sanitize(detector, BODY, {})
    dumped = json.dumps(result.body)
    assert SSN not in dumped
    assert "jane.roe@example.com" not in dumped
    first = PLACEHOLDER_PATTERN.findall(result.body["messages"][0]["content"])
    last = PLACEHOLDER_PATTERN.findall(result.body["messages"][2]["content"])
    assert first == last
    assert len(first) == 2
    assert result.replaced == {"US_SSN": 2, "EMAIL_ADDRESS": 2}
    assert "411" not in repr(result)
    assert "jane" not in repr(result.pseudonyms)


def test_placeholders_avoid_request_text() -> None:
    """A placeholder is never a string the request already contains, and each value gets its own."""
    avoid = [f"x PERSON_{c}" for c in ("bbbbbbbb",)]
    pseudonyms = PseudonymMap(avoid=avoid)
    codes = {pseudonyms.placeholder_for("PERSON", f"name {i}") for i in range(200)}
    assert len(codes) == 200
    assert all(re.fullmatch(r"PERSON_[bcdfghjkmnpqrstvwxz]{8}", c) for c in codes)
    assert "PERSON_bbbbbbbb" not in codes


def test_restore_text_any_case_only_known() -> None:
    """restore_text replaces this request's placeholders in any case and leaves look-alikes."""
    pseudonyms = PseudonymMap()
    ph = pseudonyms.placeholder_for("PERSON", "Ana Lima")
    text = f"Hi {ph}, {ph.lower()} and PERSON_bbbbbbbb."
    assert restore_text(text, pseudonyms) == "Hi Ana Lima, Ana Lima and PERSON_bbbbbbbb."


@pytest.mark.parametrize("seed", range(5), ids=[f"seed-{i}" for i in range(5)])
def test_stream_restorer_any_chunking(seed: int) -> None:
    """Fed in random 1-3 character chunks, the stream restores exactly, and never holds back
    more than one placeholder's length."""
    pseudonyms = PseudonymMap()
    a = pseudonyms.placeholder_for("PERSON", 'Zoë "Q" Ng')
    b = pseudonyms.placeholder_for("US_SSN", SSN)
    text = f"{a} has {b}; P{a}{b} PERSON_ end P"
    rng = random.Random(seed)
    restorer = StreamRestorer(pseudonyms)
    out, pos = [], 0
    while pos < len(text):
        step = rng.randint(1, 3)
        out.append(restorer.feed(text[pos : pos + step]))
        assert restorer.pending < max(len(a), len(b))
        pos += step
    out.append(restorer.flush())
    assert "".join(out) == restore_text(text, pseudonyms)


def test_restore_response_body_and_tool_arguments() -> None:
    """Message content is restored; tool-call arguments stay valid JSON with the original."""
    pseudonyms = PseudonymMap()
    ph = pseudonyms.placeholder_for("PERSON", 'Ann "A" Lee')
    body = {
        "choices": [
            {
                "index": 0,
                "message": {
                    "content": f"Dear {ph}",
                    "tool_calls": [
                        {"function": {"name": "f", "arguments": json.dumps({"who": ph})}}
                    ],
                },
            }
        ]
    }
    out = restore_response_body(body, pseudonyms)
    message = out["choices"][0]["message"]
    assert message["content"] == 'Dear Ann "A" Lee'
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"who": 'Ann "A" Lee'}
    assert body["choices"][0]["message"]["content"] == f"Dear {ph}"


def test_sse_restorer_releases_on_finish() -> None:
    """Chunks are restored across boundaries; held text comes out with finish_reason."""
    pseudonyms = PseudonymMap()
    ph = pseudonyms.placeholder_for("EMAIL_ADDRESS", "a@b.co")
    text = f"Mail {ph}"
    restorer = SSERestorer(pseudonyms)
    out = []
    for i in range(0, len(text), 2):
        chunk = {
            "choices": [{"index": 0, "delta": {"content": text[i : i + 2]}, "finish_reason": None}]
        }
        out.append(restorer.feed_chunk(chunk)["choices"][0]["delta"]["content"])
    final = restorer.feed_chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    out.append(final["choices"][0]["delta"].get("content", ""))
    assert "".join(out) == "Mail a@b.co"
    assert restorer.flush() == {}


def test_tool_arguments_sanitized_as_json(detector: Detector) -> None:
    """Values inside tool-call arguments are replaced and the arguments stay valid JSON."""
    args = json.dumps({"record": {"ssn": SSN, "name": "Jessica Nelson", "n": 1}})
    body = {
        "messages": [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "u", "arguments": args}}
                ],
            }
        ]
    }
    result = _sanitize(detector, body, {})
    new_args = result.body["messages"][0]["tool_calls"][0]["function"]["arguments"]
    decoded = json.loads(new_args)
    assert SSN not in new_args
    assert "Jessica Nelson" not in new_args
    assert decoded["record"]["n"] == 1
    assert restore_text(decoded["record"]["ssn"], result.pseudonyms) == SSN


def test_residual_findings_ignore_placeholders(detector: Detector) -> None:
    """Re-detecting a sanitized body reports nothing that is only placeholders."""
    result = _sanitize(detector, BODY, {})
    texts = extract_texts(result.body)
    assert residual_findings(detector.analyze(texts), texts) == []
