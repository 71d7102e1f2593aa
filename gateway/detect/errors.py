"""Detection's exception tree, rooted in the gateway's.

    BastionError (pki.errors)
     └── GatewayError (gateway.errors)     status 500: detection failing means fail closed
          └── DetectError                  detection could not run or was misused
               ├── DetectorInitError       the NLP model or Presidio could not be set up
               ├── SpecError               a policy's custom recognizer is invalid (bad regex)
               ├── AnalysisError           analysis of a request failed (outside error translated)
               └── TextPathError           a text path does not name a text in the body

Messages name the recognizer, path or limit involved and never carry the analysed text.
"""

from __future__ import annotations

from gateway.errors import GatewayError

__all__ = ["AnalysisError", "DetectError", "DetectorInitError", "SpecError", "TextPathError"]


class DetectError(GatewayError):
    """Detection could not run or was misused; the request must fail closed."""


class DetectorInitError(DetectError):
    """The spaCy model or the Presidio analyzer could not be built."""


class SpecError(DetectError):
    """A policy's detection section describes a recognizer that cannot work."""


class AnalysisError(DetectError):
    """Analysing a request failed."""


class TextPathError(DetectError):
    """A path given to :func:`gateway.detect.replace_texts` names no text in the body."""
