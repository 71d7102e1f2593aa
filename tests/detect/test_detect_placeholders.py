"""Bastion's own placeholders never trigger detection (issue 13, item 6): the re-scan after
sanitizing masks this request's placeholders, so no piece of one (``ID`` before
``MEDICAL_RECORD_NUMBER_…``) becomes an entity; real values next to a placeholder are still found;
placeholder-shaped text the caller wrote is not masked; and placeholders are a pure function of
the request, so the same request is sanitized (and routed) the same way every time."""

from __future__ import annotations

import pytest

from gateway.detect import Detector, TextRef, extract_texts
from gateway.sanitize import PseudonymMap, sanitize_body

_MAP = PseudonymMap(avoid=["fixture"])
MRN = _MAP.placeholder_for("MEDICAL_RECORD_NUMBER", "018507740")
P1 = _MAP.placeholder_for("PERSON", "Ana Lima")
P2 = _MAP.placeholder_for("PERSON", "Rui Costa")
PW = _MAP.placeholder_for("PASSWORD", "Hunter2!x")
CARD = _MAP.placeholder_for("CREDIT_CARD", "4110 7364 9084 8577")
SSN = _MAP.placeholder_for("US_SSN", "536-22-4197")
EMAIL = _MAP.placeholder_for("EMAIL_ADDRESS", "ana@example.com")
ADDR = _MAP.placeholder_for("STREET_ADDRESS", "12 Rue Dubois")

ONLY_PLACEHOLDERS = [
    ("patient-id", f"Note: patient ID {MRN}."),
    ("dear", f"Dear {P1}, thank you for your letter."),
    ("holder-two", f"Account holder: {P1} {P2}."),
    ("the-name", f"The {P1} Group sent the {P2} report."),
    ("dr", f"Dr. {P1} will call {P2} tomorrow."),
    ("password", f"password: {PW}"),
    ("json-name", f'{{"name": "{P1}", "ssn": "{SSN}", "card": "{CARD}"}}'),
    ("csv", f"name,email,address\n{P1},{EMAIL},{ADDR}\n"),
    ("lower-case-copy", f"account holder: {P1.lower()} {P2.lower()}."),
    ("possessive", f"{P1}'s card {CARD} and {P2}’s SSN {SSN}."),
    ("cue-lowercase", f"Cliente: {P1}. indirizzo: {ADDR}."),
]


@pytest.mark.parametrize(
    "text", [c[1] for c in ONLY_PLACEHOLDERS], ids=[c[0] for c in ONLY_PLACEHOLDERS]
)
def test_rescan_reads_no_entity_in_placeholders(detector: Detector, text: str) -> None:
    """A text whose only sensitive parts are this request's placeholders has no finding at all."""
    findings = detector.analyze([TextRef("t", text)], placeholders=list(_MAP.placeholders()))
    assert [(f.entity_type, text[f.start : f.end]) for f in findings] == []


REAL_NEXT_TO_PLACEHOLDER = [
    ("phone", f"call {P1} at 305-797-6837", "PHONE_NUMBER", "305-797-6837"),
    ("name", f"Claire Barton and {P1} met at Reyes LLC.", "PERSON", "Claire Barton"),
    ("ssn", f"{P1} has SSN 536-22-4197", "US_SSN", "536-22-4197"),
    ("aws", f"{PW} and key AKIAZSJAGC65FRX3JTTO", "AWS_ACCESS_KEY", "AKIAZSJAGC65FRX3JTTO"),
]


@pytest.mark.parametrize(
    ("text", "entity", "value"),
    [c[1:] for c in REAL_NEXT_TO_PLACEHOLDER],
    ids=[c[0] for c in REAL_NEXT_TO_PLACEHOLDER],
)
def test_rescan_still_finds_real_values(
    detector: Detector, text: str, entity: str, value: str
) -> None:
    """Masking placeholders does not hide a real value beside one."""
    findings = detector.analyze([TextRef("t", text)], placeholders=list(_MAP.placeholders()))
    assert any(f.entity_type == entity and value in text[f.start : f.end] for f in findings)


def test_placeholder_shaped_caller_text_is_not_masked(detector: Detector) -> None:
    """Text the caller wrote in placeholder shape is scanned as text: only the placeholders the
    request was given are masked (a secret named like a placeholder is still a secret)."""
    text = "password: Hunter2x_bcdfghjk and PERSON_kqzrtxwb card 4110 7364 9084 8577"
    findings = detector.analyze([TextRef("t", text)], placeholders=[P1])
    assert {f.entity_type for f in findings} >= {"PASSWORD", "CREDIT_CARD"}


BODY = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "Note: patient ID 018507740 for Ana Lima."},
        {
            "role": "user",
            "content": "Ana Lima, SSN 536-22-4197, asks about her card 4110 7364 9084 8577.",
        },
    ],
}


def test_same_request_same_placeholders(detector: Detector) -> None:
    """Sanitizing the same request twice gives the same body (so the same route); another
    request with one value in common gets a different placeholder for it."""
    findings = detector.analyze(extract_texts(BODY))
    first = sanitize_body(BODY, findings, {})
    second = sanitize_body(BODY, detector.analyze(extract_texts(BODY)), {})
    assert first.body == second.body
    other = {**BODY, "messages": [*BODY["messages"], {"role": "user", "content": "Thanks."}]}
    third = sanitize_body(other, detector.analyze(extract_texts(other)), {})
    assert set(first.pseudonyms.placeholders()).isdisjoint(third.pseudonyms.placeholders())


def test_rescan_of_sanitized_request_is_clean(detector: Detector) -> None:
    """The sanitized body, re-scanned with its placeholders masked, has no finding."""
    result = sanitize_body(BODY, detector.analyze(extract_texts(BODY)), {})
    again = detector.analyze(
        extract_texts(result.body), placeholders=list(result.pseudonyms.placeholders())
    )
    assert again == []


def test_placeholders_are_a_function_of_key_and_request() -> None:
    """Same key and request texts: same placeholder; another key (another process) or another
    request: another one; never a string the request contains."""
    texts = ["plain text", "Ana Lima wrote PERSON_bcdfghjk"]
    ph = PseudonymMap(avoid=texts, key=b"k" * 32).placeholder_for("PERSON", "Ana Lima")
    assert PseudonymMap(avoid=texts, key=b"k" * 32).placeholder_for("PERSON", "Ana Lima") == ph
    assert PseudonymMap(avoid=texts, key=b"j" * 32).placeholder_for("PERSON", "Ana Lima") != ph
    assert PseudonymMap(avoid=texts[:1], key=b"k" * 32).placeholder_for("PERSON", "Ana Lima") != ph
    assert ph.lower() not in " ".join(texts).lower()
