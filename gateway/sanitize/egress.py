"""The last check before a body leaves for a managed upstream: every string of the exact
serialized body, read without any list of fields.

:func:`egress_texts` decodes the bytes that will be sent and returns every string in them:
object keys that are not the schema's own field names, every string value, and, for a string
that itself holds JSON, every string inside it (recursively, bounded by
:data:`MAX_JSON_IN_STRING_DEPTH` and :data:`MAX_JSON_IN_STRING_CHARS`). A field added to the
API later is read here the day it exists, because nothing here names a field.

Exemptions, and why (the only ones):

- the top-level ``"model"`` value: the gateway writes it (the upstream's model name from the
  gateway config, ``Upstream.upstream_model``), never the caller;
- strings that are the typed schema's own words (field names, enum values,
  :func:`gateway.api.schemas.schema_vocabulary`): the request validated against that schema,
  so these are Bastion's constants;
Numbers: no recognizer reads a bare JSON number, so :func:`long_numbers` names every number of
:data:`MIN_IDENTIFIER_DIGITS` digits or more (a seed, a token id, a schema default), and the scan
fails closed on each. Token ids, limits, penalties and biases are far shorter.

- strings the detector already read verbatim in this request with nothing at or above the
  threshold (``known_clean``): the same string gives the same findings; scanning it twice only
  costs time.

:func:`mask_tokens` overwrites Bastion's own replacement strings of the request (placeholders,
``<TYPE>``, masks, hashes: ``SanitizedRequest.tokens``) with :data:`MASK_CHAR` before the scan,
so pieces of them (``ID`` in ``patient ID MEDICAL_RECORD_NUMBER_x``) are not read as entities
and routing never depends on placeholder text; :func:`residual` drops a finding that covers
nothing but masked characters and mask stars. (Blanking with spaces instead made cue-based
recognizers read the next word as the value: ``SSN=<blank>`` as a password.)
"""

from __future__ import annotations

import html
import json
import re
import urllib.parse
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from gateway.api.schemas import schema_vocabulary
from gateway.detect.findings import Finding, TextRef

__all__ = [
    "MASK_CHAR",
    "MAX_JSON_IN_STRING_CHARS",
    "MAX_JSON_IN_STRING_DEPTH",
    "egress_texts",
    "long_numbers",
    "mask_tokens",
    "residual",
]

MAX_JSON_IN_STRING_DEPTH = 4  # JSON inside a string inside a string ... this deep
MAX_JSON_IN_STRING_CHARS = 1_048_576  # a longer string is scanned raw only
MIN_IDENTIFIER_DIGITS = 8  # a JSON number this many digits long fails the egress scan closed
_EXEMPT_TOP_LEVEL = ("model",)
# Not a letter, digit, space or separator: no recognizer reads it (the detector's own mask,
# gateway.detect._placeholders.MASK_CHAR, is the same character).
MASK_CHAR = "\u25a0"


def egress_texts(serialized: bytes, *, known_clean: Collection[str] = frozenset()) -> list[TextRef]:
    """Every string of ``serialized`` (a JSON object) that the detector must read.

    Raises ``ValueError`` if the bytes are not a JSON object: the caller fails closed.
    """
    document = json.loads(serialized)
    if not isinstance(document, dict):
        raise ValueError("the outgoing body is not a JSON object")
    skip = schema_vocabulary() | frozenset(known_clean)
    out: list[TextRef] = []
    seen: set[str] = set()

    def add(path: str, text: str) -> None:
        if text in seen or not text.strip():
            return
        seen.add(text)
        if text not in skip:
            out.append(TextRef(path, text))
        # Decoded forms are read even for a known-clean text: detection read it encoded.
        for i, decoded in enumerate(decodings(text)):
            if decoded not in seen and decoded not in skip:
                seen.add(decoded)
                out.append(TextRef(f"{path}~{i}", decoded))

    def walk(value: Any, path: str, depth: int) -> None:
        stack: list[tuple[Any, str]] = [(value, path)]
        while stack:
            node, where = stack.pop()
            if isinstance(node, str):
                add(where, node)
                inner = _json_inside(node, depth)
                if inner is not None:
                    walk(inner[0], where + "#", depth + 1)
            elif isinstance(node, list):
                stack.extend((item, f"{where}[{i}]") for i, item in enumerate(node))
            elif isinstance(node, dict):
                for i, (key, item) in enumerate(node.items()):
                    if key not in skip:
                        add(f"{where}<{i}>", key)
                    stack.append((item, f"{where}{{{i}}}"))

    for i, (key, item) in enumerate(document.items()):
        if key in _EXEMPT_TOP_LEVEL:
            continue
        if key not in skip:
            add(f"<{i}>", key)
        walk(item, key, 0)
    return out


_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


def decodings(text: str) -> list[str]:
    """What a reader (or the model) would read ``text`` as, where that differs from it: HTML
    entities, percent-encoding and literal ``\\uXXXX`` escapes decoded (each alone, then all
    three). The egress scan reads these too, so an encoded value is still seen."""
    if not any(c in text for c in "&%\\"):
        return []
    steps = (
        html.unescape,
        urllib.parse.unquote,
        lambda t: _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), t),
    )
    out: list[str] = []
    every = text
    for step in steps:
        decoded = step(text)
        every = step(every)
        if decoded != text and decoded not in out:
            out.append(decoded)
    if every != text and every not in out:
        out.append(every)
    return out


def long_numbers(serialized: bytes) -> list[str]:
    """The paths of every JSON number in ``serialized`` (JSON inside strings included) whose
    integer part has at least :data:`MIN_IDENTIFIER_DIGITS` digits. No recognizer reads a bare
    number, and a number that long can be an identifier (a card as a ``seed``, an SSN as a token
    id or a schema ``default``), so the egress scan fails closed on each: such a request goes to
    ``on_error``, never managed. Raises ``ValueError`` for bytes that are not JSON."""
    out: list[str] = []
    stack: list[tuple[Any, str, int]] = [(json.loads(serialized), "", 0)]
    while stack:
        node, where, depth = stack.pop()
        if isinstance(node, bool):
            continue
        if isinstance(node, (int, float)):
            if node != node or abs(node) >= 10 ** (MIN_IDENTIFIER_DIGITS - 1):  # NaN, inf too
                out.append(where)
        elif isinstance(node, str):
            inner = _json_inside(node, depth)
            if inner is not None:
                stack.append((inner[0], where + "#", depth + 1))
        elif isinstance(node, list):
            stack.extend((item, f"{where}[{i}]", depth) for i, item in enumerate(node))
        elif isinstance(node, dict):
            stack.extend((item, f"{where}{{{i}}}", depth) for i, item in enumerate(node.values()))
    return out


def _json_inside(text: str, depth: int) -> tuple[Any] | None:
    if depth >= MAX_JSON_IN_STRING_DEPTH or len(text) > MAX_JSON_IN_STRING_CHARS:
        return None
    stripped = text.strip()
    if not stripped or stripped[0] not in '{["':
        return None
    try:
        return (json.loads(stripped),)
    except (ValueError, RecursionError):
        return None


def mask_tokens(texts: Sequence[TextRef], tokens: Iterable[str]) -> list[TextRef]:
    """``texts`` with each of Bastion's replacement strings overwritten by :data:`MASK_CHAR`
    (same length, so offsets hold). Matching ignores case, as restore does."""
    ordered = sorted({t for t in tokens if t}, key=len, reverse=True)
    if not ordered:
        return list(texts)
    pattern = re.compile("|".join(re.escape(t) for t in ordered), re.IGNORECASE)
    return [
        TextRef(r.path, pattern.sub(lambda m: MASK_CHAR * len(m.group()), r.text)) for r in texts
    ]


def residual(
    findings: Iterable[Finding], texts: Sequence[TextRef], threshold: float
) -> list[Finding]:
    """Findings at or above ``threshold`` that cover more than blanks and mask stars."""
    by_path = {ref.path: ref.text for ref in texts}
    out: list[Finding] = []
    for f in findings:
        if f.score < threshold:
            continue
        covered = by_path.get(f.path, "")[f.start : f.end].replace("*", "")
        if any(c.isalnum() for c in covered):
            out.append(f)
    return out
