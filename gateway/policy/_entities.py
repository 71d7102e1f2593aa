"""Entity types a policy may name: detection's ``KNOWN_ENTITIES`` plus the policy's own.

Detection (``gateway.detect.entities``) owns the one list; the linter reads it from there.
"""

from __future__ import annotations

__all__ = ["known_entities"]


def known_entities() -> frozenset[str]:
    """Entity types the detector can report (before the policy adds its custom ones)."""
    # Imported here, not at the top: the policy package loads before detection's on most paths
    # and needs the list only when a policy names an entity.
    from gateway.detect.entities import KNOWN_ENTITIES

    return KNOWN_ENTITIES
