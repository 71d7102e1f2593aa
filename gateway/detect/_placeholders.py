"""Masking Bastion's own placeholders before a re-scan (issue 13, item 6).

A sanitized text holds placeholders such as ``MEDICAL_RECORD_NUMBER_kqzrtxwb``. Scanned as they
are, pieces of them and their neighbours read as entities (NER tags ``ID MEDICAL_RECORD_NUMBER_…``
as a person, a pair of placeholders after ``Account holder:`` reads as a lowercase name), and the
request fails closed for no reason. So the detector is told which placeholders the request was
given; each one is replaced in the normalized text by a run of ``■`` of the same length
(offsets unchanged), and any
candidate that covers nothing but masked characters is dropped. Only the exact placeholders given
are masked: text the caller wrote in placeholder shape is scanned like any other text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["MASK_CHAR", "PlaceholderMask", "only_masked"]

MASK_CHAR = "\u25a0"  # ■: not a letter, digit, space or separator; no recognizer reads it


class PlaceholderMask:
    """The placeholders of one request, as a matcher over normalized texts."""

    __slots__ = ("_pattern",)

    def __init__(self, placeholders: Iterable[str]) -> None:
        ordered = sorted({p for p in placeholders if p}, key=len, reverse=True)
        self._pattern = (
            re.compile("|".join(re.escape(p) for p in ordered), re.IGNORECASE) if ordered else None
        )

    def __bool__(self) -> bool:
        return self._pattern is not None

    def apply(self, text: str) -> tuple[str, tuple[tuple[int, int], ...]]:
        """``text`` with every placeholder masked, and the masked spans."""
        if self._pattern is None:
            return text, ()
        spans = tuple(m.span() for m in self._pattern.finditer(text))
        if not spans:
            return text, ()
        parts: list[str] = []
        pos = 0
        for start, end in spans:
            parts.append(text[pos:start])
            parts.append(MASK_CHAR * (end - start))
            pos = end
        parts.append(text[pos:])
        return "".join(parts), spans


def only_masked(text: str, start: int, end: int, spans: tuple[tuple[int, int], ...]) -> bool:
    """True when ``text[start:end]`` has no letter or digit outside the masked spans."""
    pos = start
    for lo, hi in spans:
        if hi <= pos or lo >= end:
            continue
        if any(c.isalnum() for c in text[pos:lo]):
            return False
        pos = max(pos, hi)
    return not any(c.isalnum() for c in text[pos:end])
