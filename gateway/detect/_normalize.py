"""Normalize text before matching, keeping a map back to the original offsets.

NFKC (full-width digits and letters become ASCII, decomposed accents are composed), then zero-width
characters and soft hyphens are removed. Each normalized character remembers the span of original
characters it came from, so a match ``[s, e)`` in the normalized text maps back to the original
``[orig_start(s), orig_end(e))`` and sanitization rewrites exactly what the caller sent.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

__all__ = ["IGNORABLE", "NormalizedText", "normalize"]

_NON_ASCII = re.compile(r"[^\x00-\x7f]+")

# Zero-width space/non-joiner/joiner, word joiner, BOM, soft hyphen, invisible separators.
IGNORABLE = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e\u2061\u2062\u2063\u2064")


@dataclass(frozen=True, slots=True)
class NormalizedText:
    """A normalized text and, unless it is unchanged, per-character original spans."""

    text: str = field(repr=False)
    original_length: int
    _starts: tuple[int, ...] | None = field(default=None, repr=False)
    _ends: tuple[int, ...] | None = field(default=None, repr=False)

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """Map a normalized span ``[start, end)`` to the original text's span."""
        if self._starts is None or self._ends is None:
            return start, end
        if start >= end:
            point = self._starts[start] if start < len(self._starts) else self.original_length
            return point, point
        return self._starts[start], self._ends[end - 1]


def normalize(text: str) -> NormalizedText:
    """NFKC, strip zero-width characters and soft hyphens; keep the offset map."""
    if text.isascii() or (
        unicodedata.is_normalized("NFKC", text) and not any(c in IGNORABLE for c in text)
    ):
        return NormalizedText(text, len(text))
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    n = len(text)
    pos = 0
    for run in _NON_ASCII.finditer(text):
        begin, stop = run.span()
        if begin > pos and unicodedata.combining(text[begin]):
            begin -= 1  # the ASCII base character composes with the marks after it
        if begin > pos:  # ASCII stays as it is, in one piece
            out.append(text[pos:begin])
            starts.extend(range(pos, begin))
            ends.extend(range(pos + 1, begin + 1))
        i = begin
        while i < stop:
            ch = text[i]
            if ch in IGNORABLE:
                i += 1
                continue
            # A base character and the combining marks after it normalize together (NFD names).
            j = i + 1
            while j < stop and unicodedata.combining(text[j]):
                j += 1
            piece = unicodedata.normalize("NFKC", text[i:j])
            piece = "".join(c for c in piece if c not in IGNORABLE)
            out.append(piece)
            starts.extend([i] * len(piece))
            ends.extend([j] * len(piece))
            i = j
        pos = stop
    if pos < n:
        out.append(text[pos:])
        starts.extend(range(pos, n))
        ends.extend(range(pos + 1, n + 1))
    return NormalizedText("".join(out), n, tuple(starts), tuple(ends))
