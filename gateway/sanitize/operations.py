"""What each sanitize operation turns a value into.

- ``redact``: ``<ENTITY_TYPE>``.
- ``mask``: letters and digits become ``*``, separators stay; structured identifiers of 8 or more
  characters keep their last 4 (``***-**-6789``), anything else is masked whole.
- ``hash``: ``<ENTITY_TYPE>_h<16 letters>`` from HMAC-SHA256 under the policy's key, of the value
  NFKC-normalized: stable for one key, meaningless without it. Letters a-p stand for hex digits so
  the hash never contains a number an identifier check would match.
- ``pseudonymize``: a per-request placeholder (see ``pseudonyms``), restored in the answer.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata

from gateway.detect.entities import EntityGroup, entity_group
from gateway.policy.decision import Operation
from gateway.sanitize.errors import HashKeyMissing
from gateway.sanitize.pseudonyms import PseudonymMap
from pki.secret import Secret

__all__ = ["apply_operation"]

_HEX_TO_LETTER = str.maketrans("0123456789abcdef", "abcdefghijklmnop")
_KEEP_LAST = 4


def apply_operation(
    operation: Operation,
    entity_type: str,
    value: str,
    *,
    pseudonyms: PseudonymMap,
    hash_key: Secret | None,
) -> str:
    """The replacement for ``value`` (of ``entity_type``) under ``operation``."""
    if operation is Operation.PSEUDONYMIZE:
        return pseudonyms.placeholder_for(entity_type, value)
    if operation is Operation.REDACT:
        return f"<{entity_type}>"
    if operation is Operation.MASK:
        return _mask(entity_type, value)
    if hash_key is None or not hash_key:
        raise HashKeyMissing(
            f"the policy asks to hash {entity_type} but no HMAC key is configured; set the "
            "sanitize hash key secret (file or environment) or choose another operation"
        )
    normalized = unicodedata.normalize("NFKC", value).strip()
    digest = hmac.new(
        hash_key.reveal().encode(), f"{entity_type}\x00{normalized}".encode(), hashlib.sha256
    ).hexdigest()
    return f"{entity_type}_h{digest[:16].translate(_HEX_TO_LETTER)}"


def _mask(entity_type: str, value: str) -> str:
    alnum = [i for i, c in enumerate(value) if c.isalnum()]
    keep: set[int] = set()
    if entity_group(entity_type) is EntityGroup.STRUCTURED_ID and len(alnum) >= 2 * _KEEP_LAST:
        keep = set(alnum[-_KEEP_LAST:])
    return "".join(c if (not c.isalnum() or i in keep) else "*" for i, c in enumerate(value))
