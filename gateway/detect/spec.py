"""What a policy asks detection to do: a plain, frozen description the ``Detector`` is built from.

The policy loader (``gateway.policy``) turns the policy file's ``detection`` section into a
``DetectionSpec``; detection never reads YAML itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["DenyListSpec", "DetectionSpec", "PatternSpec", "RegexRecognizerSpec", "Validator"]


class Validator(StrEnum):
    """Checksums a regex match must pass before it counts."""

    NONE = "none"
    LUHN = "luhn"  # payment cards
    IBAN = "iban"  # ISO 13616 mod-97
    US_SSN = "us_ssn"  # area/group/serial ranges
    ABA = "aba"  # US routing numbers


@dataclass(frozen=True, slots=True)
class PatternSpec:
    name: str
    regex: str
    score: float


@dataclass(frozen=True, slots=True)
class RegexRecognizerSpec:
    """A custom recognizer: patterns, context words that raise the score, a checksum validator."""

    name: str
    entity_type: str
    patterns: tuple[PatternSpec, ...]
    context: tuple[str, ...] = ()
    validator: Validator = Validator.NONE


@dataclass(frozen=True, slots=True)
class DenyListSpec:
    """Terms that are always the entity type (case-insensitive, whole words), score 1.0."""

    name: str
    entity_type: str
    terms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DetectionSpec:
    threshold: float = 0.5
    entities: tuple[str, ...] | None = None  # None: every entity Bastion knows
    recognizers: tuple[RegexRecognizerSpec, ...] = ()
    deny_lists: tuple[DenyListSpec, ...] = ()
    language: str = "en"
