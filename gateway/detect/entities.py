"""The entity types detection reports, and the groups policies can talk about.

Type names are Presidio's where Presidio has one (``US_SSN``, ``CREDIT_CARD``, ...) and Bastion's
own otherwise. ``KNOWN_ENTITIES`` is what the policy linter checks names against; custom
recognizers and deny-lists in a policy add their own types on top.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType

__all__ = ["ENTITY_GROUPS", "KNOWN_ENTITIES", "EntityGroup", "entity_group", "entity_priority"]


class EntityGroup(StrEnum):
    STRUCTURED_ID = "structured_id"  # numbers and identifiers with a format (SSN, card, IBAN...)
    SECRET = "secret"  # noqa: S105 - a group name; credentials: keys, tokens, passwords
    NAME = "name"  # people
    ADDRESS = "address"  # streets, places
    OTHER = "other"  # everything else (dates, organisations, the policy's own types)


_GROUPS: dict[str, EntityGroup] = {
    # structured identifiers
    "US_SSN": EntityGroup.STRUCTURED_ID,
    "CREDIT_CARD": EntityGroup.STRUCTURED_ID,
    "IBAN_CODE": EntityGroup.STRUCTURED_ID,
    "PHONE_NUMBER": EntityGroup.STRUCTURED_ID,
    "EMAIL_ADDRESS": EntityGroup.STRUCTURED_ID,
    "IP_ADDRESS": EntityGroup.STRUCTURED_ID,
    "US_PASSPORT": EntityGroup.STRUCTURED_ID,
    "MEDICAL_RECORD_NUMBER": EntityGroup.STRUCTURED_ID,
    "DATE_OF_BIRTH": EntityGroup.STRUCTURED_ID,
    "US_BANK_NUMBER": EntityGroup.STRUCTURED_ID,
    "US_DRIVER_LICENSE": EntityGroup.STRUCTURED_ID,
    "US_ITIN": EntityGroup.STRUCTURED_ID,
    "UK_NHS": EntityGroup.STRUCTURED_ID,
    "MEDICAL_LICENSE": EntityGroup.STRUCTURED_ID,
    "ID_NUMBER": EntityGroup.STRUCTURED_ID,
    # secrets
    "AWS_ACCESS_KEY": EntityGroup.SECRET,
    "GITHUB_TOKEN": EntityGroup.SECRET,
    "OPENAI_API_KEY": EntityGroup.SECRET,
    "PRIVATE_KEY": EntityGroup.SECRET,
    "JWT": EntityGroup.SECRET,
    "PASSWORD": EntityGroup.SECRET,
    "CREDENTIAL": EntityGroup.SECRET,
    # names and addresses
    "PERSON": EntityGroup.NAME,
    "STREET_ADDRESS": EntityGroup.ADDRESS,
    "LOCATION": EntityGroup.ADDRESS,
    # other Presidio types a policy may name
    "DATE_TIME": EntityGroup.OTHER,
    "NRP": EntityGroup.OTHER,
    "URL": EntityGroup.OTHER,
    "CRYPTO": EntityGroup.OTHER,
}

ENTITY_GROUPS: MappingProxyType[str, EntityGroup] = MappingProxyType(_GROUPS)

KNOWN_ENTITIES: frozenset[str] = frozenset(_GROUPS)


def entity_group(entity_type: str) -> EntityGroup:
    """The group of an entity type; types detection does not know are ``OTHER``."""
    return _GROUPS.get(entity_type, EntityGroup.OTHER)


_PRIORITY = {
    EntityGroup.SECRET: 4,
    EntityGroup.STRUCTURED_ID: 3,
    EntityGroup.OTHER: 2,
    EntityGroup.NAME: 1,
    EntityGroup.ADDRESS: 1,
}


def entity_priority(entity_type: str) -> int:
    """Which type names a span when overlapping findings become one (secrets first)."""
    return _PRIORITY[entity_group(entity_type)]
