"""Normalization before matching (NFKC, no zero-width characters or soft hyphens) with offsets
that map back to the original text; and values split over two messages."""

from __future__ import annotations

import unicodedata

import pytest

from gateway.detect import Detector, TextRef
from gateway.detect._normalize import normalize

CASES = [
    "plain ascii",
    "Ce\u0301cile Perret",
    "ＤＥ３０ ７４１７",
    "3\u200b6\u200b2\u200b2",
    "soft\u00adhyphen ﬁne",
    "\u0301leading mark",
    "mixed é\u200b５ end",
]


@pytest.mark.parametrize("text", CASES, ids=[f"case-{i}" for i in range(len(CASES))])
def test_normalize_matches_reference_and_maps_back(text: str) -> None:
    """The normalized text equals NFKC minus ignorables, and every normalized character maps to
    original characters whose own normalization produced it."""
    norm = normalize(text)
    expected = unicodedata.normalize("NFKC", text).replace("\u200b", "").replace("\u00ad", "")
    assert norm.text == expected
    for i, ch in enumerate(norm.text):
        start, end = norm.to_original(i, i + 1)
        assert ch in unicodedata.normalize("NFKC", text[start:end])


@pytest.mark.parametrize(
    ("first", "second", "entity", "parts"),
    [
        (
            "The card number starts with 4099 2822.",
            "It ends with 9685 9349. Thanks.",
            "CREDIT_CARD",
            ("4099 2822", "9685 9349"),
        ),
        ("The SSN starts with 860-87.", "It ends with 2231.", "US_SSN", ("860-87", "2231")),
        (
            "The IBAN starts with GB66 MIDL 4269.",
            "It ends with 3643 1800 03.",
            "IBAN_CODE",
            ("GB66 MIDL 4269", "3643 1800 03"),
        ),
        ("My first name is Minenhle.", "My surname is Binda.", "PERSON", ("Minenhle", "Binda")),
    ],
    ids=["card", "ssn", "iban", "name"],
)
def test_split_values_across_messages(
    detector: Detector, first: str, second: str, entity: str, parts: tuple[str, str]
) -> None:
    """Both halves of a value given in two messages are reported, typed from the first."""
    refs = [
        TextRef("messages[0].content", first),
        TextRef("messages[1].content", "What is the rest?"),
        TextRef("messages[2].content", second),
    ]
    texts = {r.path: r.text for r in refs}
    found = {(f.entity_type, texts[f.path][f.start : f.end]) for f in detector.analyze(refs)}
    assert (entity, parts[0]) in found
    assert (entity, parts[1]) in found
