"""Recognizer-level pins for the red team of issue 13 (glue, separators, AWS key id variants):
each value is found by the real detector, and look-alike benign text is not."""

from __future__ import annotations

import pytest

from gateway.detect import Detector, EntityGroup, entity_group, extract_texts

FOUND = [
    ("ssn-spaced-dashes", "my ssn is 078 - 05 - 1120", "US_SSN", "078 - 05 - 1120"),
    ("ssn-fraction-slash", "ssn 078\u204405\u20441120", "US_SSN", "078\u204405\u20441120"),
    ("ssn-glued-letter", "ref s078-05-1120 noted", "US_SSN", "078-05-1120"),
    ("ssn-glued-both", "refA078051120Z noted", "US_SSN", "078051120"),
    ("ssn-underscores", "f_078_05_1120", "US_SSN", "078_05_1120"),
    ("card-newlines", "card\n4111\n1111\n1111\n1111", "CREDIT_CARD", "4111\n1111\n1111\n1111"),
    ("card-double-spaces", "card 4111  1111  1111  1111", "CREDIT_CARD", "4111  1111  1111  1111"),
    ("card-glued", "ref x4111111111111111 noted", "CREDIT_CARD", "4111111111111111"),
    ("card-in-longer-run", "order 9941111111111111111 noted", "CREDIT_CARD", "9941111111111111111"),
    ("iban-dashes", "iban GB82-WEST-1234-5698-7654-32", "IBAN_CODE", "GB82-WEST-1234-5698-7654-32"),
    ("iban-dots", "iban GB82.WEST.1234.5698.7654.32", "IBAN_CODE", "GB82.WEST.1234.5698.7654.32"),
    (
        "email-ideographic-dot",
        "mail jane.roe@example\u3002com",
        "EMAIL_ADDRESS",
        "jane.roe@example\u3002com",
    ),
    (
        "email-quoted-local",
        'mail "jane.roe"@example.com',
        "EMAIL_ADDRESS",
        '"jane.roe"@example.com',
    ),
    ("aws-lowercase", "key akiaz3mxq7v4wlbn2tqe", "AWS_ACCESS_KEY", "akiaz3mxq7v4wlbn2tqe"),
    ("aws-groups", "key AKIA Z3MX Q7V4 WLBN 2TQE", "AWS_ACCESS_KEY", "AKIA Z3MX Q7V4 WLBN 2TQE"),
    ("aws-glued", "keyAKIAZ3MXQ7V4WLBN2TQEend", "AWS_ACCESS_KEY", "AKIAZ3MXQ7V4WLBN2TQE"),
    (
        "aws-cyrillic",
        "key \u0410\u041a\u0406\u0410Z3MXQ7V4WLBN2TQE",
        "AWS_ACCESS_KEY",
        "\u0410\u041a\u0406\u0410Z3MXQ7V4WLBN2TQE",
    ),
]

NOT_FOUND = [
    ("asia-prose", "Asia Pacific region sales 2024 report"),
    ("asia-prose-digits", "Asia 7 day trip to 5 cities and more places"),
    ("uuids", "ids 550e8400-e29b-41d4-a716-446655440000 and 123e4567-e89b-12d3-a456-426614174000"),
    ("date-range", "between 2024-03-01 - 2024-04-15"),
    ("number-list", "Sort these numbers: 42, 7, 19, 88, 3, 56."),
    ("isbns", "ISBN 978-9-782-60427-9, ISBN 978-5-587-94566-1"),
    ("ean-sku", "EAN 4089082952786 and SKU-4652-BLK"),
    ("phone-eu", "call 612 34 56 78"),
]


def _analyze(detector: Detector, text: str) -> list[tuple[str, str]]:
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    return [(f.entity_type, text[f.start : f.end]) for f in detector.analyze(extract_texts(body))]


@pytest.mark.parametrize(
    ("text", "entity", "value"), [c[1:] for c in FOUND], ids=[c[0] for c in FOUND]
)
def test_red_team_value_is_found(detector: Detector, text: str, entity: str, value: str) -> None:
    assert (entity, value) in _analyze(detector, text)


@pytest.mark.parametrize("text", [c[1] for c in NOT_FOUND], ids=[c[0] for c in NOT_FOUND])
def test_lookalike_is_not_structured_or_secret(detector: Detector, text: str) -> None:
    found = [
        (e, v)
        for e, v in _analyze(detector, text)
        if entity_group(e) in (EntityGroup.STRUCTURED_ID, EntityGroup.SECRET)
        and e != "PHONE_NUMBER"
    ]
    assert found == []
