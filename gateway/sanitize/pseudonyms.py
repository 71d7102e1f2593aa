"""Per-request pseudonyms: type-tagged, unguessable placeholders and the map back.

Shape: ``<ENTITY_TYPE>_<8 random consonants>``, e.g. ``PERSON_kqzrtxwb`` or
``US_SSN_bvdmhfzq``. Why this shape: models copy identifier-like tokens (capital letters,
underscores, a short lowercase tail) verbatim far more reliably than bracketed or Unicode-
delimited ones, which get dropped, re-spaced or "fixed". The tail has no digits and no vowels, so
it can never spell a word, a number or part of an identifier the corpus rules would match, and
19^8 (about 1.7e10) choices make it unguessable from outside. Restore matches placeholders case-
insensitively, in case a model changes their case.

Codes are drawn from an HMAC-SHA256, under a random per-process key, of the request's texts, the
entity type and the value (issue 13, item 6): the same request always gets the same placeholders,
so its route can never depend on a random draw; different requests get unrelated codes, so a
managed provider cannot link one person across requests; without the key nobody can guess or
invert a code. Each code is checked against every text of the request, so a placeholder never
collides with what the caller wrote (a collision moves on to the next HMAC counter). The same
original value gets the same placeholder within a request.
"""

from __future__ import annotations

import hashlib
import hmac
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
# Drawn once per process; never leaves it (not logged, not audited, not configurable).
_PROCESS_KEY = secrets.token_bytes(32)


class PseudonymMap:
    """Originals and their placeholders for one request. Its repr never shows a value."""

    __slots__ = ("_avoid", "_by_original", "_by_placeholder", "_context")

    def __init__(self, *, avoid: Iterable[str] = (), key: bytes | None = None) -> None:
        self._by_original: dict[tuple[str, str], str] = {}
        self._by_placeholder: dict[str, str] = {}  # lowercased placeholder -> original
        texts = tuple(avoid)
        self._avoid = tuple(t.lower() for t in texts)
        digest = hashlib.sha256()
        for text in texts:
            digest.update(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest())
        # The HMAC state for this request: key and request texts absorbed once.
        self._context = hmac.new(key or _PROCESS_KEY, digest.digest(), hashlib.sha256)

    def placeholder_for(self, entity_type: str, original: str) -> str:
        """The placeholder for ``original`` (created on first use)."""
        key = (entity_type, original)
        existing = self._by_original.get(key)
        if existing is not None:
            return existing
        tag = re.sub(r"[^A-Z0-9_]", "_", entity_type.upper()) or "ENTITY"
        for attempt in range(_MAX_TRIES):
            code = self._code(tag, original, attempt)
            placeholder = f"{tag}_{code}"
            low = placeholder.lower()
            if low not in self._by_placeholder and not any(low in t for t in self._avoid):
                break
        else:  # pragma: no cover - 1.7e10 codes; only a hostile avoid-list gets here
            raise RuntimeError("could not draw a placeholder that does not collide")
        self._by_original[key] = placeholder
        self._by_placeholder[low] = original
        return placeholder

    def _code(self, tag: str, original: str, attempt: int) -> str:
        mac = self._context.copy()
        for part in (tag, original, str(attempt)):
            data = part.encode("utf-8", "surrogatepass")
            mac.update(len(data).to_bytes(8, "big") + data)
        number = int.from_bytes(mac.digest(), "big")
        letters = []
        for _ in range(CODE_LENGTH):
            number, index = divmod(number, len(CODE_ALPHABET))
            letters.append(CODE_ALPHABET[index])
        return "".join(letters)

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
