"""PII and secret detection over every text of an OpenAI request.

Public surface:

- :func:`extract_texts` / :func:`replace_texts`: the texts a request carries, by path.
- :class:`Detector` (built from a policy's :class:`DetectionSpec`): ``analyze(texts)`` returns
  :class:`Finding` s in original offsets; ``analyze(texts, placeholders=...)`` re-scans a sanitized
  body with this request's placeholders masked. Blocking: run it in a bounded pool.
- :func:`get_analyzer`: the process-wide Presidio analyzer (offline spaCy model), built once.
- :data:`KNOWN_ENTITIES`, :class:`EntityGroup`, :func:`entity_group`: entity type names and
  the groups (structured_id, secret, name, address) policies reason about.

Importing this package is cheap: :class:`Detector` and :func:`get_analyzer` (whose modules
import spaCy and Presidio) are loaded on first use, through the module ``__getattr__`` below with
static imports, so ``bastion policy …`` and the audit commands that only need findings and
entity names do not pay seconds of start-up for the NLP stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.detect.entities import (
    ENTITY_GROUPS,
    KNOWN_ENTITIES,
    EntityGroup,
    entity_group,
    entity_priority,
)
from gateway.detect.errors import (
    AnalysisError,
    DetectError,
    DetectorInitError,
    SpecError,
    TextPathError,
)
from gateway.detect.findings import Finding, TextRef
from gateway.detect.spec import (
    DenyListSpec,
    DetectionSpec,
    PatternSpec,
    RegexRecognizerSpec,
    Validator,
)
from gateway.detect.texts import extract_texts, replace_texts

if TYPE_CHECKING:
    from gateway.detect.detector import Detector
    from gateway.detect.engine import get_analyzer


def __getattr__(name: str) -> Any:
    if name == "Detector":
        from gateway.detect.detector import Detector

        return Detector
    if name == "get_analyzer":
        from gateway.detect.engine import get_analyzer

        return get_analyzer
    raise AttributeError(f"module 'gateway.detect' has no attribute {name!r}")


__all__ = [
    "ENTITY_GROUPS",
    "KNOWN_ENTITIES",
    "AnalysisError",
    "DenyListSpec",
    "DetectError",
    "DetectionSpec",
    "Detector",
    "DetectorInitError",
    "EntityGroup",
    "Finding",
    "PatternSpec",
    "RegexRecognizerSpec",
    "SpecError",
    "TextPathError",
    "TextRef",
    "Validator",
    "entity_group",
    "entity_priority",
    "extract_texts",
    "get_analyzer",
    "replace_texts",
]
