"""The loaded policy: frozen, typed, validated once (see ``policies/README.md`` for the format).

Built only by :func:`gateway.policy.loader.load_policy`; nothing mutates it afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from gateway.detect.spec import DetectionSpec
from gateway.policy.decision import Operation
from gateway.vocabulary import RouteKind  # re-exported: a route's kind is the shared word

__all__ = [
    "ANY_ENTITY",
    "DENY",
    "EntityCondition",
    "Policy",
    "Route",
    "RouteKind",
    "Rule",
    "Then",
    "When",
]

ANY_ENTITY = "*"  # in ``when.entities.any``: a finding of any type
DENY = "deny"  # ``defaults.on_error`` value that refuses instead of routing on-prem


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    kind: RouteKind
    upstream: str  # an upstream name in the gateway configuration
    fallback: str | None = None  # managed only: on-prem route to use when the upstream fails
    # managed only, ``binary: allow``: image/audio/file parts go here unscanned (the operator
    # accepts it). Default (``refuse``): such a request fails closed to ``on_error``.
    allow_binary: bool = False


@dataclass(frozen=True, slots=True)
class EntityCondition:
    """``any``: at least one of these types found; ``all``: each of them found. Only findings
    scored at least ``min_score`` (and the detection threshold) count."""

    any: frozenset[str] = frozenset()
    all: frozenset[str] = frozenset()
    min_score: float | None = None


@dataclass(frozen=True, slots=True)
class When:
    """Conditions of a rule; all given must hold. Glob tuples: any one matching is enough."""

    entities: EntityCondition | None = None
    identity: tuple[str, ...] | None = None
    model: tuple[str, ...] | None = None
    endpoint: tuple[str, ...] | None = None
    header: Mapping[str, tuple[str, ...]] | None = None  # lower-case header names

    @property
    def is_catch_all(self) -> bool:
        return (
            self.entities is None
            and self.identity is None
            and self.model is None
            and self.endpoint is None
            and not self.header
        )


@dataclass(frozen=True, slots=True)
class Then:
    """Exactly one outcome: ``route`` (optionally with ``sanitize`` for a managed route), or
    ``deny_message``."""

    route: str | None = None
    deny_message: str | None = None
    sanitize: Mapping[str, Operation] = field(default_factory=lambda: MappingProxyType({}))
    sanitize_default: Operation | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    when: When
    then: Then
    description: str = ""


@dataclass(frozen=True, slots=True)
class Policy:
    """A validated policy. ``version`` is ``sha256:<hex>`` of its canonical JSON content, so
    comments, whitespace and key order do not change it."""

    name: str
    version: str
    source: str  # the file it came from (for messages)
    default_route: str
    on_error: str  # DENY, or the name of an on-prem route
    detection: DetectionSpec
    routes: Mapping[str, Route]
    rules: tuple[Rule, ...]
    description: str = ""

    @property
    def threshold(self) -> float:
        return self.detection.threshold

    def rule(self, rule_id: str) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)
