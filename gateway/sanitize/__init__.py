"""Sanitize a request for a managed upstream, and restore pseudonyms in its answer.

Public surface:

- :func:`sanitize_body` (body, findings, operations per entity type, HMAC key) ->
  :class:`SanitizedRequest` (sanitized body, :class:`PseudonymMap`, counts per type). Types
  without an operation get :data:`DEFAULT_OPERATION` (pseudonymize).
- :func:`residual_findings`: after re-detecting on the sanitized body, the findings that are more
  than placeholders (anything left means fail closed).
- :func:`restore_text`, :class:`StreamRestorer`, :func:`restore_response_body`,
  :class:`SSERestorer`, :class:`PseudonymRestorer`: originals back into answers, streamed or
  not.
- :func:`egress_texts`, :func:`mask_tokens`, :func:`residual` (``gateway.sanitize.egress``):
  the last check of the exact bytes that leave for a managed upstream.
"""

from __future__ import annotations

from gateway.sanitize.egress import egress_texts, mask_tokens, residual
from gateway.sanitize.errors import HashKeyMissing, SanitizeError
from gateway.sanitize.operations import apply_operation
from gateway.sanitize.pseudonyms import PLACEHOLDER_PATTERN, PseudonymMap
from gateway.sanitize.restore import (
    PseudonymRestorer,
    SSERestorer,
    StreamRestorer,
    restore_response_body,
    restore_text,
)
from gateway.sanitize.sanitizer import (
    DEFAULT_OPERATION,
    SanitizedRequest,
    residual_findings,
    sanitize_body,
)

__all__ = [
    "DEFAULT_OPERATION",
    "PLACEHOLDER_PATTERN",
    "HashKeyMissing",
    "PseudonymMap",
    "PseudonymRestorer",
    "SSERestorer",
    "SanitizeError",
    "SanitizedRequest",
    "StreamRestorer",
    "apply_operation",
    "egress_texts",
    "mask_tokens",
    "residual",
    "residual_findings",
    "restore_response_body",
    "restore_text",
    "sanitize_body",
]
