"""Entity types a policy may name: detection's ``KNOWN_ENTITIES`` plus the policy's own.

Detection (``gateway.detect``) owns the authoritative list; until it exports one, the fallback
below (Presidio's predefined recognizers plus Bastion's) keeps the linter working.
"""

from __future__ import annotations

import importlib

__all__ = ["known_entities"]

_FALLBACK = frozenset(
    {
        # Presidio predefined recognizers (presidio-analyzer 2.2)
        "CREDIT_CARD",
        "CRYPTO",
        "DATE_TIME",
        "EMAIL_ADDRESS",
        "IBAN_CODE",
        "IP_ADDRESS",
        "LOCATION",
        "MEDICAL_LICENSE",
        "NRP",
        "PERSON",
        "PHONE_NUMBER",
        "URL",
        "US_BANK_NUMBER",
        "US_DRIVER_LICENSE",
        "US_ITIN",
        "US_PASSPORT",
        "US_SSN",
        "UK_NHS",
        # Bastion's own recognizers
        "MEDICAL_RECORD_NUMBER",
        "DATE_OF_BIRTH",
        "STREET_ADDRESS",
        "AWS_ACCESS_KEY",
        "GITHUB_TOKEN",
        "OPENAI_API_KEY",
        "PRIVATE_KEY",
        "JWT",
        "PASSWORD",
    }
)


def known_entities() -> frozenset[str]:
    """Entity types the detector can report (before the policy adds its custom ones)."""
    for name in ("gateway.detect", "gateway.detect.entities"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        value = getattr(module, "KNOWN_ENTITIES", None)
        if isinstance(value, frozenset | set | tuple | list) and value:
            return frozenset(str(v) for v in value)
    return _FALLBACK
