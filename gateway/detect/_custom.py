"""A policy's own recognizers: regex patterns with context words and checksum validators, and
deny-lists (whole words, any case, score 1.0).

Context works as in Presidio: a context word within ``CONTEXT_WINDOW`` characters before (or just
after) a match raises its score by 0.35, to at least 0.4.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from gateway.detect._base import CONTEXT_WINDOW, Candidate, luhn_ok, mod97_ok, ssn_ok
from gateway.detect.errors import SpecError
from gateway.detect.spec import DenyListSpec, RegexRecognizerSpec, Validator

__all__ = ["CompiledDenyList", "CompiledRecognizer", "compile_deny_list", "compile_recognizer"]

_FLAGS = re.IGNORECASE | re.MULTILINE
CONTEXT_BOOST = 0.35
MIN_SCORE_WITH_CONTEXT = 0.4


def _aba_ok(digits: str) -> bool:
    if len(digits) != 9:
        return False
    d = [int(c) for c in digits]
    return (3 * (d[0] + d[3] + d[6]) + 7 * (d[1] + d[4] + d[7]) + d[2] + d[5] + d[8]) % 10 == 0


def _validate(validator: Validator, value: str) -> bool:
    if validator is Validator.NONE:
        return True
    if validator is Validator.IBAN:
        return mod97_ok("".join(c for c in value if c.isalnum()))
    digits = "".join(c for c in value if c.isdigit())
    if validator is Validator.LUHN:
        return 12 <= len(digits) <= 19 and luhn_ok(digits)
    if validator is Validator.US_SSN:
        return ssn_ok(digits)
    return _aba_ok(digits)


@dataclass(frozen=True, slots=True)
class CompiledRecognizer:
    spec: RegexRecognizerSpec
    patterns: tuple[tuple[re.Pattern[str], float], ...]
    context: re.Pattern[str] | None

    def find(self, text: str) -> Iterator[Candidate]:
        name = f"policy:{self.spec.name}"
        for pattern, base in self.patterns:
            for m in pattern.finditer(text):
                if m.end() <= m.start() or not _validate(self.spec.validator, m.group()):
                    continue
                score = base
                if self.context is not None and self._has_context(text, m.start(), m.end()):
                    score = max(MIN_SCORE_WITH_CONTEXT, min(1.0, base + CONTEXT_BOOST))
                yield Candidate(self.spec.entity_type, score, m.start(), m.end(), name)

    def _has_context(self, text: str, start: int, end: int) -> bool:
        context = self.context
        if context is None:
            return False
        before = context.search(text, max(0, start - CONTEXT_WINDOW), start)
        return before is not None or context.search(text, end, end + 16) is not None


def compile_recognizer(spec: RegexRecognizerSpec) -> CompiledRecognizer:
    """Compile a policy recognizer; a bad regex is a :class:`SpecError` naming it."""
    if not spec.patterns:
        raise SpecError(f"custom recognizer {spec.name!r} has no patterns; add at least one")
    compiled: list[tuple[re.Pattern[str], float]] = []
    for pattern in spec.patterns:
        if not 0.0 <= pattern.score <= 1.0:
            raise SpecError(
                f"pattern {pattern.name!r} of recognizer {spec.name!r} has score "
                f"{pattern.score}; scores are between 0 and 1"
            )
        try:
            compiled.append((re.compile(pattern.regex, _FLAGS), pattern.score))
        except re.error as exc:
            raise SpecError(
                f"pattern {pattern.name!r} of recognizer {spec.name!r} is not a valid regular "
                f"expression ({exc.msg} at position {exc.pos}); fix the regex in the policy"
            ) from None
    context = None
    words = [w.strip() for w in spec.context if w.strip()]
    if words:
        alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        context = re.compile(rf"(?<!\w)(?:{alternatives})", re.IGNORECASE)
    return CompiledRecognizer(spec, tuple(compiled), context)


@dataclass(frozen=True, slots=True)
class CompiledDenyList:
    spec: DenyListSpec
    pattern: re.Pattern[str] | None

    def find(self, text: str) -> Iterator[Candidate]:
        if self.pattern is None:
            return
        name = f"policy:{self.spec.name}"
        for m in self.pattern.finditer(text):
            yield Candidate(self.spec.entity_type, 1.0, m.start(), m.end(), name)


def compile_deny_list(spec: DenyListSpec) -> CompiledDenyList:
    terms = [" ".join(t.split()) for t in spec.terms if t.strip()]
    if not terms:
        return CompiledDenyList(spec, None)
    alternatives = "|".join(
        r"\s+".join(re.escape(part) for part in term.split())
        for term in sorted(terms, key=len, reverse=True)
    )
    return CompiledDenyList(spec, re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE))
