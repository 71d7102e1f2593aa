"""What detection hands to the policy: where a text sits in the request, and what was found.

Neither type carries the text in its repr: a ``Finding`` holds offsets into a ``TextRef`` so it can
be logged, audited and explained without the value it points at.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Finding", "TextRef"]


@dataclass(frozen=True, slots=True)
class TextRef:
    """One text the request carries, and where: ``messages[2].content``,
    ``messages[1].content[0].text``, ``messages[3].tool_calls[0].function.arguments``,
    ``messages[0].name``, ``prompt``, ``prompt[1]``."""

    path: str
    text: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Finding:
    """A detected entity: type (Presidio names, e.g. ``US_SSN``, ``CREDIT_CARD``, ``EMAIL_ADDRESS``,
    ``PERSON``, plus Bastion's and the policy's own), score in [0, 1], the text's path and the
    character offsets ``[start, end)`` in that text, and the recognizer that found it."""

    entity_type: str
    score: float
    path: str
    start: int
    end: int
    recognizer: str
