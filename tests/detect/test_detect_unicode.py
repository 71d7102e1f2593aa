"""Unicode evasion (issue 13, item 4): every dash and ``_`` as a separator, every invisible
character (Default_Ignorable_Code_Point, format characters, variation selectors, tag characters,
bidi isolates, fillers), line/paragraph separators and combining marks on digits must not hide a
structured identifier or a key. The invisible set is derived from Unicode data, and the property
"any such character inserted anywhere in a value still finds it" is checked over all of them."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from gateway.detect import Detector
from gateway.detect._normalize import ignorable_characters, normalize
from tests.detect.conftest import find_in

SSN = "536-22-4197"
CARD = "4110-7364-9084-8577"
PHONE = "(305) 797-6837"
AWS = "AKIAZSJAGC65FRX3JTTO"

# (text with the value, entity, the value as written)
_DASHES = ["\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2015", "\u2212", "\ufe63", "\uff0d"]
SEPARATOR_CASES = [
    *[(f"SSN {SSN.replace('-', d)}.", "US_SSN", SSN.replace("-", d)) for d in _DASHES],
    *[(f"card {CARD.replace('-', d)}.", "CREDIT_CARD", CARD.replace("-", d)) for d in _DASHES],
    *[(f"phone {PHONE.replace('-', d)}.", "PHONE_NUMBER", PHONE.replace("-", d)) for d in _DASHES],
    (f"ssn {SSN.replace('-', '_')} on file", "US_SSN", SSN.replace("-", "_")),
    (f"card {CARD.replace('-', '_')} on file", "CREDIT_CARD", CARD.replace("-", "_")),
    ("call 305_797_6837 now", "PHONE_NUMBER", "305_797_6837"),
]


@pytest.mark.parametrize(
    ("text", "entity", "value"),
    SEPARATOR_CASES,
    ids=[
        f"{e}-U+{ord(v[3]) if v[3] != '-' else 0:04X}-{i}"
        for i, (_, e, v) in enumerate(SEPARATOR_CASES)
    ],
)
def test_any_dash_or_underscore_separates_identifiers(
    detector: Detector, text: str, entity: str, value: str
) -> None:
    """An SSN, card or phone written with a Unicode dash, a minus sign or ``_`` is found, with a
    span covering the value as the caller wrote it."""
    found = find_in(detector, text)
    assert any(t == entity and value in span for t, span in found), found


INVISIBLE_CASES = [
    ("tag", "\U000e0041"),
    ("tag-cancel", "\U000e007f"),
    ("bidi-isolate-LRI", "\u2066"),
    ("bidi-isolate-PDI", "\u2069"),
    ("cgj", "\u034f"),
    ("variation-selector-16", "\ufe0f"),
    ("variation-selector-supplement", "\U000e0100"),
    ("hangul-filler", "\u3164"),
    ("halfwidth-hangul-filler", "\uffa0"),
    ("choseong-filler", "\u115f"),
    ("jungseong-filler", "\u1160"),
    ("mongolian-fvs", "\u180b"),
    ("khmer-inherent", "\u17b4"),
    ("line-separator", "\u2028"),
    ("paragraph-separator", "\u2029"),
    ("combining-acute-on-digit", "\u0301"),
    ("combining-enclosing-keycap", "\u20e3"),
    ("zwsp", "\u200b"),
    ("word-joiner", "\u2060"),
    ("control-bel", "\x07"),
]


def _interleave(value: str, ch: str) -> str:
    return ch.join(value)


_VALUES = [
    ("SSN", "US_SSN", SSN),
    ("card", "CREDIT_CARD", CARD),
    ("AWS key", "AWS_ACCESS_KEY", AWS),
]
# Line and paragraph separators are whitespace, not invisibles: they stand between the groups of
# a number (a key cut by one is two words, so keys are not tried with them).
_INVISIBLE_MATRIX = [
    (name, ch, context, entity, value)
    for name, ch in INVISIBLE_CASES
    for context, entity, value in _VALUES
    if not (name.startswith(("line-", "paragraph-")) and entity == "AWS_ACCESS_KEY")
]


@pytest.mark.parametrize(
    ("name", "ch", "context", "entity", "value"),
    _INVISIBLE_MATRIX,
    ids=[f"{c[2].split()[0].lower()}-{c[0]}" for c in _INVISIBLE_MATRIX],
)
def test_invisible_characters_inside_a_value_do_not_hide_it(
    detector: Detector, name: str, ch: str, context: str, entity: str, value: str
) -> None:
    """The character between every two characters of the value (between its groups, for the
    line and paragraph separators) does not stop its detection, and the finding covers the
    whole value as written."""
    if name.startswith(("line-", "paragraph-")):
        written = value.replace("-", ch)
    else:
        written = _interleave(value, ch)
    found = find_in(detector, f"our {context} {written} is here")
    assert any(
        t == entity
        and span.startswith(written[:1])
        and span.endswith(written[-1])
        and len(span) >= len(written) - 1
        for t, span in found
    ), (name, found)


def _default_ignorable_by_category() -> list[str]:
    """Every format character (Cf) and every variation selector, from the Unicode database."""
    out = []
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        cat = unicodedata.category(ch)
        name = unicodedata.name(ch, "")
        if cat == "Cf" or name.startswith("VARIATION SELECTOR"):
            out.append(ch)
    return out


def test_every_format_character_and_variation_selector_is_ignorable() -> None:
    """The ignorable set is derived from Unicode data: it holds every Cf character and every
    variation selector the running Python's database knows (hundreds, not a hand list)."""
    derived = _default_ignorable_by_category()
    missing = [f"U+{ord(c):04X}" for c in derived if c not in ignorable_characters()]
    assert len(derived) > 300
    assert missing == []


def test_any_ignorable_inserted_anywhere_still_finds_the_value(detector: Detector) -> None:
    """Property, over all ignorable code points: inserted at every position of an SSN and of an
    AWS key (one code point per text, rotating positions), the value is still found."""
    misses = []
    for k, ch in enumerate(sorted(ignorable_characters())):
        for context, entity, value in (("SSN", "US_SSN", SSN), ("key", "AWS_ACCESS_KEY", AWS)):
            pos = 1 + k % (len(value) - 1)
            written = value[:pos] + ch + value[pos:]
            found = find_in(detector, f"{context} {written}.")
            if not any(t == entity and len(s) == len(written) for t, s in found):
                misses.append((f"U+{ord(ch):04X}", entity))
    assert misses == []


NORMALIZE_CASES = [
    ("123\u2013456", "123-456"),
    ("a\u2028b\u2029c\x85d", "a b c\nd"),
    ("1\u03012\u0302", "12"),
    ("x\U000e0041y", "xy"),
    ("\u0661\u0662\u0663", "123"),  # Arabic-Indic digits become ASCII digits
    ("Ce\u0301cile", "Cécile"),
    ("a\u1680b", "a b"),
]


@pytest.mark.parametrize(
    ("text", "expected"), NORMALIZE_CASES, ids=[f"n{i}" for i in range(len(NORMALIZE_CASES))]
)
def test_normalize_folds_and_keeps_offsets(text: str, expected: str) -> None:
    """Dashes fold to ``-``, separators to whitespace, marks on digits and invisibles go, other
    digits become ASCII; every normalized character maps back into the original."""
    norm = normalize(text)
    assert norm.text == expected
    assert norm.to_original(0, len(norm.text)) == (0, len(text))
    for i in range(len(norm.text)):
        start, end = norm.to_original(i, i + 1)
        assert 0 <= start < end <= len(text)
