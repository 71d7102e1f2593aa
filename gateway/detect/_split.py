"""Values given in pieces across messages ("The card number starts with 4099 2822." ... "It ends
with 9685 9349.").

Neither half is a card, SSN or IBAN on its own, and the halves are not adjacent in any one text,
so a pattern over one message (or over the concatenated messages) cannot see the value. Instead,
a piece announced by a fragment cue (``starts with``, ``begins with``, ``ends with``, ``the rest
is``, ``last digits are``) is reported by itself, typed by the context word in its sentence
(``card``, ``SSN``, ``phone``, ``IBAN``), or else by the type of the opening piece in an earlier
text. When an opening and a closing piece together pass the type's checksum (Luhn, mod-97, SSN
ranges), both are reported with a higher score. Names given in parts (``My first name is …`` /
``My surname is …``) are found by the name cues in ``_people``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.detect._base import Candidate, luhn_ok, mod97_ok, nearest_context, ssn_ok

__all__ = ["find_split_values"]

_R = "bastion-split"
_OPEN = re.compile(
    r"\b(?:starts?|begins?|beginning|opens?)\s+with\s*:?\s*"
    r"|\bfirst\s+(?:part|half|digits|few\s+digits|\w+\s+digits|characters)\s+(?:is|are)?\s*:?\s*",
    re.IGNORECASE,
)
_CLOSE = re.compile(
    r"\b(?:ends?|finishes)\s+(?:with|in)\s*:?\s*"
    r"|\blast\s+(?:part|half|digits|few\s+digits|\w+\s+digits|characters)\s+(?:is|are)?\s*:?\s*"
    r"|\b(?:the\s+)?rest\s+(?:of\s+it\s+)?is\s*:?\s*"
    r"|\bremaining\s+(?:part|digits|characters)\s+(?:is|are)\s*:?\s*",
    re.IGNORECASE,
)
_GROUP = re.compile(r"\(?[A-Za-z0-9]{1,8}\)?")


@dataclass(frozen=True, slots=True)
class _Piece:
    text_index: int
    start: int
    end: int
    entity: str | None
    opening: bool
    value: str


def _piece_after(text: str, pos: int) -> tuple[int, int] | None:
    """The run of digit groups (and uppercase letter groups, for IBAN bank codes) at ``pos``."""
    start = end = pos
    digits = 0
    i = pos
    while True:
        m = _GROUP.match(text, i)
        if m is None:
            break
        group = m.group().strip("()")
        if not (any(c.isdigit() for c in group) or group.isupper()):
            break
        digits += sum(c.isdigit() for c in group)
        end = m.end()
        i = end
        if i < len(text) and text[i] in " -." and i + 1 < len(text) and text[i + 1].isalnum():
            i += 1
        else:
            break
    return (start, end) if digits >= 2 else None


def find_split_values(texts: Sequence[str]) -> list[tuple[int, Candidate]]:
    """Pieces of split values in a request's texts (normalized), as (text index, candidate)."""
    pieces: list[_Piece] = []
    for index, text in enumerate(texts):
        for pattern, opening in ((_OPEN, True), (_CLOSE, False)):
            for m in pattern.finditer(text):
                span = _piece_after(text, m.end())
                if span is None:
                    continue
                entity = nearest_context(text, m.start(), window=60)
                pieces.append(
                    _Piece(index, span[0], span[1], entity, opening, text[span[0] : span[1]])
                )
    pieces.sort(key=lambda p: (p.text_index, p.start))
    out: list[tuple[int, Candidate]] = []
    last_open: _Piece | None = None
    for piece in pieces:
        entity = piece.entity
        score = 0.8
        if piece.opening:
            last_open = piece
        elif last_open is not None and last_open.text_index <= piece.text_index:
            entity = entity or last_open.entity
            if _joined_valid(entity, last_open.value + piece.value):
                score = 0.95
                out.append(
                    (
                        last_open.text_index,
                        Candidate(
                            last_open.entity or entity or "ID_NUMBER",
                            0.95,
                            last_open.start,
                            last_open.end,
                            _R,
                        ),
                    )
                )
        out.append(
            (piece.text_index, Candidate(entity or "ID_NUMBER", score, piece.start, piece.end, _R))
        )
    return out


def _joined_valid(entity: str | None, joined: str) -> bool:
    alnum = "".join(c for c in joined if c.isalnum())
    digits = "".join(c for c in joined if c.isdigit())
    if entity == "CREDIT_CARD":
        return 13 <= len(digits) <= 19 and luhn_ok(digits)
    if entity == "IBAN_CODE":
        return mod97_ok(alnum)
    if entity == "US_SSN":
        return ssn_ok(digits)
    return entity == "PHONE_NUMBER" and 7 <= len(digits) <= 15
