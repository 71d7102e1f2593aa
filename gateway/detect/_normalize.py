"""Normalize text before matching, keeping a map back to the original offsets.

What the recognizers see (issue 13, item 4: nothing a reader ignores may hide a value):

- NFKC: full-width digits and letters become ASCII, decomposed accents are composed.
- Removed: every Default_Ignorable_Code_Point (all format characters ``Cf``, among them zero-width
  characters, the soft hyphen, bidi controls and isolates and the tag characters; all variation
  selectors; the Hangul fillers; U+034F), and control characters other than tab and line breaks.
  The set is derived from the Unicode database at first use, never a hand list of characters.
- Folded: every dash (category ``Pd``) and minus sign to ``-``; every space separator (``Zs``) and
  the line and paragraph separators U+2028/U+2029 to a space (``536\\u202822\\u20284197`` is an
  SSN written with odd spaces, not three lines), U+0085 to ``\\n``; every decimal digit
  (``Nd``, Arabic-Indic, Devanagari, ...) to its ASCII digit.
- Combining marks on a digit, a separator or an ASCII letter they do not compose with are
  dropped (``4\\u0301`` is ``4``); marks on other letters stay (they are part of names).

``_`` is not folded here (it is part of keys, tokens and field names): :func:`structured_view`
gives the structured-identifier recognizers a view where ``_`` reads as ``-``, and
:func:`ascii_skeleton` one where accented Latin letters read as their base letter (an AWS key
written ``ÁḰÍÁ…`` with combining accents). Both keep the length, so offsets do not change.

Each normalized character remembers the span of original characters it came from, so a match
``[s, e)`` in the normalized text maps back to the original ``[orig_start(s), orig_end(e))`` and
sanitization rewrites exactly what the caller sent (invisible characters inside included).
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from dataclasses import dataclass, field

__all__ = [
    "NormalizedText",
    "ascii_skeleton",
    "fold_confusables",
    "ignorable_characters",
    "normalize",
    "structured_view",
]

# Other_Default_Ignorable_Code_Point and Variation_Selector (Unicode PropList.txt): the part of
# Default_Ignorable_Code_Point that is not category Cf. Ranges are inclusive.
_OTHER_IGNORABLE_RANGES = (
    (0x034F, 0x034F),  # COMBINING GRAPHEME JOINER
    (0x115F, 0x1160),  # HANGUL CHOSEONG / JUNGSEONG FILLER
    (0x17B4, 0x17B5),  # KHMER VOWEL INHERENT AQ / AA
    (0x180B, 0x180D),  # MONGOLIAN FREE VARIATION SELECTORS ONE..THREE
    (0x180F, 0x180F),  # MONGOLIAN FREE VARIATION SELECTOR FOUR
    (0x2065, 0x2065),
    (0x3164, 0x3164),  # HANGUL FILLER
    (0xFE00, 0xFE0F),  # VARIATION SELECTOR-1..16
    (0xFFA0, 0xFFA0),  # HALFWIDTH HANGUL FILLER
    (0xFFF0, 0xFFF8),
    (0xE0000, 0xE0FFF),  # tags, VARIATION SELECTOR-17..256, and the reserved rest of the block
)
_MINUS_SIGNS = "\u2212\u2796\u02d7\u2043\u208b\u207b\ufe62"  # minus signs and a hyphen bullet
_KEEP_CONTROLS = "\t\n\v\f\r"
_NEWLINE_CONTROLS = "\x85"  # NEXT LINE
# A run that may need work: anything outside printable ASCII and the whitespace kept as is.
_RUN = re.compile(r"[^\t\n\v\f\r\x20-\x7e]+")


@dataclass(frozen=True, slots=True)
class _Tables:
    ignorable: frozenset[str]
    special: re.Pattern[str]  # a run holding one of these takes the slow path


def _char_class(chars: frozenset[str]) -> str:
    codes = sorted(ord(c) for c in chars)
    parts: list[str] = []
    i = 0
    while i < len(codes):
        j = i
        while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1:
            j += 1
        lo, hi = codes[i], codes[j]
        parts.append(
            re.escape(chr(lo)) if lo == hi else f"{re.escape(chr(lo))}-{re.escape(chr(hi))}"
        )
        i = j + 1
    return "[" + "".join(parts) + "]"


@functools.cache
def _tables() -> _Tables:
    """Built once per process from the running Python's Unicode database (about 0.3 s)."""
    ignorable: set[str] = set()
    special: set[str] = set()
    for cp in range(sys.maxunicode + 1):
        ch = chr(cp)
        category = unicodedata.category(ch)
        if category == "Cf":
            ignorable.add(ch)
        elif (
            (category == "Cc" and ch not in _KEEP_CONTROLS)
            or category in ("Pd", "Zs", "Zl", "Zp")
            or (category == "Nd" and cp > 0x7F)
        ):
            special.add(ch)
    for lo, hi in _OTHER_IGNORABLE_RANGES:
        ignorable.update(chr(cp) for cp in range(lo, hi + 1))
    special.update(_MINUS_SIGNS)
    special |= ignorable
    special.discard(" ")
    return _Tables(frozenset(ignorable), re.compile(_char_class(frozenset(special))))


def ignorable_characters() -> frozenset[str]:
    """Every character normalization removes as invisible (Default_Ignorable_Code_Point)."""
    return _tables().ignorable


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


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "M"


def _fold(ch: str, previous: str, ignorable: frozenset[str]) -> str:
    """One NFKC output character as the recognizers see it ('' when it is dropped)."""
    if ch in ignorable:
        return ""
    if ch.isascii():
        return ch if ch >= " " or ch in _KEEP_CONTROLS else ""
    category = unicodedata.category(ch)
    if category == "Pd" or ch in _MINUS_SIGNS:
        return "-"
    if category in ("Zs", "Zl", "Zp"):
        return " "
    if ch in _NEWLINE_CONTROLS:
        return "\n"
    if category == "Nd":
        return str(unicodedata.decimal(ch))
    if category == "Cc":
        return ""
    if category[0] == "M" and (not previous or previous.isascii() or not previous.isalpha()):
        return ""  # a mark on a digit, a separator or an ASCII letter it does not compose with
    return ch


def normalize(text: str) -> NormalizedText:
    """The text recognizers match on, with the offset map back to ``text``."""
    runs = list(_RUN.finditer(text))
    if not runs:
        return NormalizedText(text, len(text))
    tables = _tables()
    ignorable = tables.ignorable
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    n = len(text)
    pos = 0
    changed = False
    for run in runs:
        begin, stop = run.span()
        if begin > pos and _is_mark(text[begin]):
            begin -= 1  # the ASCII base character composes with (or carries) the marks after it
        if begin > pos:  # ASCII stays as it is, in one piece
            out.append(text[pos:begin])
            starts.extend(range(pos, begin))
            ends.extend(range(pos + 1, begin + 1))
        segment = text[begin:stop]
        if (
            begin == run.start()  # no mark on an ASCII character in front of the run
            and not tables.special.search(segment)
            and unicodedata.is_normalized("NFKC", segment)
        ):
            out.append(segment)  # already what the recognizers see (most non-Latin text)
            starts.extend(range(begin, stop))
            ends.extend(range(begin + 1, stop + 1))
            pos = stop
            continue
        changed = True
        i = begin
        while i < stop:
            if text[i] in ignorable:
                i += 1
                continue
            # A base character and the marks after it (invisibles in between skipped) together.
            j = i + 1
            while j < stop and (text[j] in ignorable or _is_mark(text[j])):
                j += 1
            cluster = "".join(c for c in text[i:j] if c not in ignorable)
            previous = out[-1][-1] if out and out[-1] else ""
            for ch in unicodedata.normalize("NFKC", cluster):
                folded = _fold(ch, previous, ignorable)
                if folded:
                    out.append(folded)
                    starts.append(i)
                    ends.append(j)
                    previous = folded
            i = j
        pos = stop
    if not changed:
        return NormalizedText(text, len(text))
    if pos < n:
        out.append(text[pos:])
        starts.extend(range(pos, n))
        ends.extend(range(pos + 1, n + 1))
    return NormalizedText("".join(out), n, tuple(starts), tuple(ends))


@functools.cache
def _skeleton_table() -> dict[int, str]:
    table: dict[int, str] = {}
    for lo, hi in ((0x00C0, 0x024F), (0x1E00, 0x1EFF)):  # Latin-1, Latin Extended, Additional
        for cp in range(lo, hi + 1):
            decomposed = unicodedata.normalize("NFD", chr(cp))
            if (
                len(decomposed) > 1
                and decomposed[0].isascii()
                and all(map(_is_mark, decomposed[1:]))
            ):
                table[cp] = decomposed[0]
    return table


def ascii_skeleton(text: str) -> str:
    """``text`` with accented Latin letters as their ASCII base letter (same length)."""
    return text if text.isascii() else text.translate(_skeleton_table())


# Cyrillic and Greek letters that look like a Latin letter (Unicode confusables.txt, the
# single-letter part): ``\u0410\u041a\u0406\u0410`` reads as ``AKIA`` to a person and a model.
_CONFUSABLES = str.maketrans(
    "\u0410\u0412\u0415\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0425\u0406\u0408"
    "\u0405\u0423\u04ae\u0430\u0435\u043e\u0440\u0441\u0445\u0443\u0456\u0458\u0455"
    "\u0501\u04bb\u051b\u051d\u0391\u0392\u0395\u0396\u0397\u0399\u039a\u039c\u039d"
    "\u039f\u03a1\u03a4\u03a5\u03a7\u03bf\u03f2\u03f3",
    "ABEKMHOPCTXIJSYYaeopcxyijsdhqwABEZHIKMNOPTYXocj",
)
# Full stops that IDNA reads as ``.`` in a domain name (UTS #46): ``example\u3002com``.
_DOTS = str.maketrans("\u3002\uff0e\uff61", "...")


def fold_confusables(text: str) -> str:
    """``text`` with Cyrillic and Greek look-alikes of Latin letters as the Latin letter (same
    length): what key recognizers (an AWS key id with a Cyrillic ``\u0410\u041a\u0406\u0410``) see."""
    return text if text.isascii() else text.translate(_CONFUSABLES)


def structured_view(text: str) -> str:
    """What structured-identifier and key recognizers match on: ``_`` as ``-``, accents off,
    ideographic full stops as ``.``."""
    if "_" in text:
        text = text.replace("_", "-")
    if not text.isascii():
        text = text.translate(_DOTS)
    return ascii_skeleton(text)
