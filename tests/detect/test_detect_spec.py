"""A policy's DetectionSpec: custom regex recognizers (context, validators), deny-lists,
threshold and entity filter."""

from __future__ import annotations

import pytest

from gateway.detect import (
    AnalysisError,
    DenyListSpec,
    DetectionSpec,
    Detector,
    PatternSpec,
    RegexRecognizerSpec,
    SpecError,
    TextRef,
    Validator,
)


def _types(detector: Detector, text: str) -> list[tuple[str, str, float]]:
    return [
        (f.entity_type, text[f.start : f.end], f.score)
        for f in detector.analyze([TextRef("t", text)])
    ]


EMPLOYEE = RegexRecognizerSpec(
    name="employee_id",
    entity_type="EMPLOYEE_ID",
    patterns=(PatternSpec("emp", r"\bEMP-\d{6}\b", 0.3),),
    context=("employee", "badge"),
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ticket EMP-123456 closed", []),
        ("employee EMP-123456 closed", [("EMPLOYEE_ID", "EMP-123456", 0.65)]),
        ("badge: emp-654321", [("EMPLOYEE_ID", "emp-654321", 0.65)]),
    ],
    ids=["below-threshold", "context-raises", "any-case"],
)
def test_custom_regex_with_context(text: str, expected: list[tuple[str, str, float]]) -> None:
    """A custom pattern scores its base score, raised by 0.35 when a context word is near;
    findings under the threshold are dropped."""
    detector = Detector(DetectionSpec(recognizers=(EMPLOYEE,), entities=()), use_ner=False)
    assert _types(detector, text) == expected


@pytest.mark.parametrize(
    ("validator", "value", "kept"),
    [
        (Validator.LUHN, "4110736490848577", True),
        (Validator.LUHN, "4110736490848578", False),
        (Validator.IBAN, "GB91NWBK23611269459676", True),
        (Validator.IBAN, "GB91NWBK23611269459677", False),
        (Validator.US_SSN, "123456789", True),
        (Validator.US_SSN, "666456789", False),
        (Validator.ABA, "011000015", True),
        (Validator.ABA, "011000016", False),
    ],
    ids=["luhn-ok", "luhn-bad", "iban-ok", "iban-bad", "ssn-ok", "ssn-bad", "aba-ok", "aba-bad"],
)
def test_custom_validators(validator: Validator, value: str, kept: bool) -> None:
    """A custom recognizer's checksum validator drops matches that fail it."""
    spec = RegexRecognizerSpec(
        name="acct",
        entity_type="ACCOUNT",
        patterns=(PatternSpec("any", r"\b[A-Z0-9]{9,22}\b", 0.9),),
        validator=validator,
    )
    detector = Detector(DetectionSpec(recognizers=(spec,), entities=()), use_ner=False)
    assert bool(_types(detector, f"ref {value} end")) is kept


def test_deny_list_whole_words_any_case() -> None:
    """Deny-list terms match whole words in any case (and any spacing) with score 1.0."""
    spec = DetectionSpec(
        deny_lists=(DenyListSpec("projects", "PROJECT_NAME", ("Blue Falcon", "orion")),),
        entities=(),
    )
    detector = Detector(spec, use_ner=False)
    text = "Status of BLUE  falcon and Orion, not orionids."
    assert _types(detector, text) == [
        ("PROJECT_NAME", "BLUE  falcon", 1.0),
        ("PROJECT_NAME", "Orion", 1.0),
    ]


def test_entity_filter_and_threshold() -> None:
    """Only the listed entity types are reported, and only at or above the threshold."""
    text = "SSN 818-91-8100, phone (305) 797-6837, order 123456789"
    only_phone = Detector(DetectionSpec(entities=("PHONE_NUMBER",)), use_ner=False)
    assert [t for t, _, _ in _types(only_phone, text)] == ["PHONE_NUMBER"]
    strict = Detector(DetectionSpec(threshold=0.8), use_ner=False)
    assert ("US_SSN", "123456789", 0.5) not in _types(strict, text)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            DetectionSpec(
                recognizers=(
                    RegexRecognizerSpec("bad", "X", (PatternSpec("p", "(unclosed", 0.5),)),
                )
            ),
            "not a valid regular expression",
        ),
        (
            DetectionSpec(
                recognizers=(RegexRecognizerSpec("bad", "X", (PatternSpec("p", "a", 1.5),)),)
            ),
            "scores are between 0 and 1",
        ),
        (DetectionSpec(recognizers=(RegexRecognizerSpec("bad", "X", ()),)), "no patterns"),
        (DetectionSpec(language="de"), "not installed"),
        (DetectionSpec(threshold=2.0), "outside"),
    ],
    ids=["bad-regex", "bad-score", "no-patterns", "language", "threshold"],
)
def test_invalid_specs_are_rejected(spec: DetectionSpec, message: str) -> None:
    """A spec that cannot work is a SpecError naming the problem, at construction."""
    with pytest.raises(SpecError, match=message):
        Detector(spec, use_ner=False)


def test_findings_use_original_offsets() -> None:
    """Offsets point into the original text even after zero-width and full-width folding."""
    text = "x\u200by SSN ８０３-９５-０７１３ and\u00ad more"
    detector = Detector(DetectionSpec(), use_ner=False)
    [finding] = detector.analyze([TextRef("t", text)])
    assert text[finding.start : finding.end] == "８０３-９５-０７１３"


class _FailingAnalyzer:
    """Stands in for Presidio's AnalyzerEngine (same ``analyze`` signature) and fails."""

    def analyze(self, text: str, language: str, entities: list[str]) -> list[object]:
        raise ValueError(f"model exploded on {text!r}")


def test_analyzer_failure_fails_closed_without_text() -> None:
    """An NER failure becomes AnalysisError (the request fails closed), and its message does not
    carry the analysed text."""
    detector = Detector(DetectionSpec(), analyzer=_FailingAnalyzer())  # type: ignore[arg-type]
    with pytest.raises(AnalysisError) as caught:
        detector.analyze([TextRef("t", "Meet Claire Barton tomorrow")])
    assert "Claire" not in str(caught.value)
