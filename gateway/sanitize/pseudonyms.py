"""Per-request pseudonyms: type-tagged, random, unguessable placeholders and the map back.

Shape: ``<ENTITY_TYPE>_<8 random consonants>``, e.g. ``PERSON_kqzrtxwb`` or
``US_SSN_bvdmhfzq``. Why this shape: models copy identifier-like tokens (capital letters,
underscores, a short lowercase tail) verbatim far more reliably than bracketed or Unicode-
delimited ones, which get dropped, re-spaced or "fixed". The tail has no digits and no vowels, so
it can never spell a word, a number or part of an identifier the corpus rules would match, and
19^8 (about 1.7e10) choices make it unguessable from outside. Restore matches placeholders case-
insensitively, in case a model changes their case.

Codes are random per request and checked against every text of the request, so a placeholder
never collides with what the caller wrote. The same original value gets the same placeholder
within a request.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator

__all__ = ["CODE_ALPHABET", "CODE_LENGTH", "PLACEHOLDER_PATTERN", "PseudonymMap"]

CODE_ALPHABET = "bcdfghjkmnpqrstvwxz"
CODE_LENGTH = 8
PLACEHOLDER_PATTERN = re.compile(
    rf"\b[A-Z][A-Z0-9_]*_[{CODE_ALPHABET}]{{{CODE_LENGTH}}}\b", re.IGNORECASE
)
_MAX_TRIES = 64


class PseudonymMap:
    """Originals and their placeholders for one request. Its repr never shows a value."""

    __slots__ = ("_avoid", "_by_original", "_by_placeholder")

    def __init__(self, *, avoid: Iterable[str] = ()) -> None:
        self._by_original: dict[tuple[str, str], str] = {}
        self._by_placeholder: dict[str, str] = {}  # lowercased placeholder -> original
        self._avoid = tuple(t.lower() for t in avoid)

    def placeholder_for(self, entity_type: str, original: str) -> str:
        """The placeholder for ``original`` (created on first use)."""
        key = (entity_type, original)
        existing = self._by_original.get(key)
        if existing is not None:
            return existing
        tag = re.sub(r"[^A-Z0-9_]", "_", entity_type.upper()) or "ENTITY"
        for _ in range(_MAX_TRIES):
            code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
            placeholder = f"{tag}_{code}"
            low = placeholder.lower()
            if low not in self._by_placeholder and not any(low in t for t in self._avoid):
                break
        else:  # pragma: no cover - 1.7e10 codes; only a hostile avoid-list gets here
            raise RuntimeError("could not draw a placeholder that does not collide")
        self._by_original[key] = placeholder
        self._by_placeholder[low] = original
        return placeholder

    def original_for(self, placeholder: str) -> str | None:
        """The original behind a placeholder (any case), or None."""
        return self._by_placeholder.get(placeholder.lower())

    def placeholders(self) -> Iterator[str]:
        yield from self._by_original.values()

    def __len__(self) -> int:
        return len(self._by_original)

    def __bool__(self) -> bool:
        return bool(self._by_original)

    def __repr__(self) -> str:
        return f"PseudonymMap({len(self)} placeholders)"
