"""Sanitize a request body: every finding's span replaced as the decision's operations say.

Rules:

- Overlapping findings in one text become one span (their union), named by the most sensitive
  type among them (secret > structured identifier > other > name/address, then score).
- An entity type the decision has no operation for gets ``default_operation`` (pseudonymize
  unless the caller says otherwise): nothing found is ever left in place.
- A value found once is replaced wherever else it occurs in the request (another message, a
  tool argument), even where no recognizer fired there.
- Tool-call arguments that are JSON are rewritten through their decoded string values (findings
  in the raw string are carried over as values), then re-encoded, so the result stays valid JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from gateway.detect.entities import entity_priority
from gateway.detect.findings import Finding, TextRef
from gateway.detect.texts import extract_texts, replace_texts, split_pointer_path
from gateway.policy.decision import Operation
from gateway.sanitize.operations import apply_operation
from gateway.sanitize.pseudonyms import PLACEHOLDER_PATTERN, PseudonymMap
from pki.secret import Secret

__all__ = ["DEFAULT_OPERATION", "SanitizedRequest", "residual_findings", "sanitize_body"]

DEFAULT_OPERATION = Operation.PSEUDONYMIZE
_MIN_PROPAGATE = 4  # shorter values are not searched for elsewhere in the request


@dataclass(frozen=True, slots=True)
class _Span:
    start: int
    end: int
    entity_type: str
    score: float


@dataclass(frozen=True, slots=True)
class SanitizedRequest:
    """The sanitized body, the placeholders to restore, what was replaced (type -> count), and
    every replacement string written (placeholders, ``<TYPE>``, masks, hashes): the egress scan
    masks exactly these, so Bastion's own tokens never read as entities."""

    body: dict[str, Any] = field(repr=False)
    pseudonyms: PseudonymMap
    replaced: Mapping[str, int]
    tokens: frozenset[str] = field(default=frozenset(), repr=False)


def sanitize_body(
    body: BaseModel | Mapping[str, Any],
    findings: Sequence[Finding],
    operations: Mapping[str, Operation],
    *,
    hash_key: Secret | None = None,
    default_operation: Operation = DEFAULT_OPERATION,
    extracted: Sequence[TextRef] | None = None,
) -> SanitizedRequest:
    """Return the body (a new plain dict built from the typed request, see
    :func:`gateway.detect.texts.replace_texts`) with every finding replaced, and the per-request
    pseudonym map. ``extracted``: the request's texts when the caller already has them."""
    refs = list(extracted) if extracted is not None else extract_texts(body)
    texts = {ref.path: ref.text for ref in refs}
    pseudonyms = PseudonymMap(avoid=texts.values())
    spans = _spans_by_path(findings, texts)
    _propagate(spans, refs)
    replaced: dict[str, int] = {}
    tokens: set[str] = set()

    def replace(entity_type: str, value: str) -> str:
        operation = operations.get(entity_type, default_operation)
        replaced[entity_type] = replaced.get(entity_type, 0) + 1
        token = apply_operation(
            operation, entity_type, value, pseudonyms=pseudonyms, hash_key=hash_key
        )
        tokens.add(token)
        return token

    replacements: dict[str, str] = {}
    arguments = {split_pointer_path(p)[0] for p in texts if split_pointer_path(p)[1] is not None}
    for path, text in texts.items():
        head, pointer = split_pointer_path(path)
        if pointer is not None or path in arguments:
            continue  # JSON arguments are handled below, through their decoded values
        merged = _merge(spans.get(path, []))
        if merged:
            replacements[path] = _rewrite(text, merged, replace)
    for head in sorted(arguments):
        edits = _argument_edits(head, texts, spans, replace)
        replacements.update(edits)
    sanitized = replace_texts(body, replacements)
    return SanitizedRequest(sanitized, pseudonyms, replaced, frozenset(tokens))


def _spans_by_path(findings: Iterable[Finding], texts: Mapping[str, str]) -> dict[str, list[_Span]]:
    spans: dict[str, list[_Span]] = {}
    for f in findings:
        text = texts.get(f.path)
        if text is None or not 0 <= f.start < f.end <= len(text):
            continue
        spans.setdefault(f.path, []).append(_Span(f.start, f.end, f.entity_type, f.score))
    return spans


def _propagate(spans: dict[str, list[_Span]], refs: Sequence[TextRef]) -> None:
    """Add spans for every other occurrence of a found value anywhere in the request."""
    values: dict[str, _Span] = {}
    for ref in refs:
        for s in spans.get(ref.path, []):
            value = ref.text[s.start : s.end].strip()
            if len(value) < _MIN_PROPAGATE:
                continue
            known = values.get(value)
            if known is None or entity_priority(s.entity_type) > entity_priority(known.entity_type):
                values[value] = s
    if not values:
        return
    ordered = sorted(values, key=len, reverse=True)
    pattern = re.compile(
        r"(?<![^\W_])(?:" + "|".join(re.escape(v) for v in ordered) + r")(?![^\W_])"
    )
    for ref in refs:
        for m in pattern.finditer(ref.text):
            source = values[m.group()]
            spans.setdefault(ref.path, []).append(
                _Span(m.start(), m.end(), source.entity_type, source.score)
            )


def _merge(spans: list[_Span]) -> list[_Span]:
    """Union of overlapping spans, named by the most sensitive type among them."""
    if not spans:
        return []
    ordered = sorted(spans, key=lambda s: (s.start, -s.end))
    out: list[_Span] = []
    current = ordered[0]
    for s in ordered[1:]:
        if s.start < current.end:
            winner = max(current, s, key=lambda x: (entity_priority(x.entity_type), x.score))
            current = _Span(
                current.start, max(current.end, s.end), winner.entity_type, winner.score
            )
        else:
            out.append(current)
            current = s
    out.append(current)
    return out


def _rewrite(text: str, spans: list[_Span], replace: Any) -> str:
    parts: list[str] = []
    pos = 0
    for s in spans:
        parts.append(text[pos : s.start])
        parts.append(replace(s.entity_type, text[s.start : s.end]))
        pos = s.end
    parts.append(text[pos:])
    return "".join(parts)


def _argument_edits(
    head: str, texts: Mapping[str, str], spans: Mapping[str, list[_Span]], replace: Any
) -> dict[str, str]:
    raw = texts[head]
    raw_spans = _merge(spans.get(head, []))
    try:
        decoded_doc = json.loads(raw)
    except ValueError:
        return {head: _rewrite(raw, raw_spans, replace)} if raw_spans else {}
    # Values found in the raw JSON text, decoded, to be replaced inside the decoded strings.
    carried: list[tuple[str, _Span]] = []
    for s in raw_spans:
        fragment = raw[s.start : s.end]
        try:
            value = json.loads(f'"{fragment}"')
        except ValueError:
            value = fragment
        if isinstance(value, str) and value.strip():
            carried.append((value, s))
    carried.sort(key=lambda item: len(item[0]), reverse=True)
    edits: dict[str, str] = {}
    prefix = head + "#"
    for path, text in texts.items():
        if not path.startswith(prefix):
            continue
        path_spans = list(spans.get(path, []))
        for value, s in carried:
            start = text.find(value)
            while start >= 0:
                path_spans.append(_Span(start, start + len(value), s.entity_type, s.score))
                start = text.find(value, start + len(value))
        merged = _merge(path_spans)
        if merged:
            edits[path] = _rewrite(text, merged, replace)
    if not edits and raw_spans:
        # Findings only across JSON structure: rewrite the raw text and keep it if still JSON.
        del decoded_doc
        return {head: _rewrite(raw, raw_spans, replace)}
    return edits


def residual_findings(findings: Sequence[Finding], texts: Sequence[TextRef]) -> list[Finding]:
    """Findings in sanitized texts that are more than placeholders (for the re-check after
    sanitizing: a finding that only covers placeholders, ``<TYPE>`` or ``*`` is not a leak)."""
    by_path = {ref.path: ref.text for ref in texts}
    out: list[Finding] = []
    for f in findings:
        text = by_path.get(f.path, "")
        covered = PLACEHOLDER_PATTERN.sub("", text[f.start : f.end])
        covered = re.sub(r"<[A-Z_]+>|\*+", "", covered)
        if any(c.isalnum() for c in covered):
            out.append(f)
    return out
