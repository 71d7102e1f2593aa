"""The policy engine's input and output types (the engine itself is pure: no I/O).

``decide(facts, policy) -> Decision``: the first rule whose ``when`` matches wins; no match means
the policy's default. The decision names the rule, the route, the sanitize operations per entity
type and the policy version (hash of the canonical policy content).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from gateway.detect.findings import Finding
from gateway.vocabulary import RouteKind

__all__ = ["Action", "Decision", "Operation", "RequestFacts"]


class Action(StrEnum):
    """The decision: one of the route kinds (:class:`gateway.vocabulary.RouteKind`), or deny.
    ``Action(route_kind)`` is the action of routing there."""

    ONPREM = RouteKind.ONPREM.value  # Bastion's own worker(s), inside the perimeter
    MANAGED = RouteKind.MANAGED.value  # a managed API, after sanitization
    DENY = "deny"


class Operation(StrEnum):
    REDACT = "redact"  # replaced by <TYPE>
    MASK = "mask"  # all but the last few characters replaced
    HASH = "hash"  # keyed hash (HMAC), stable within a key
    PSEUDONYMIZE = "pseudonymize"  # per-request unguessable placeholder, restored in the answer


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """Everything the decision may look at. Built by the gateway (or ``bastion policy test``)."""

    identity: str  # spiffe://trust-domain/path
    model: str  # the model alias the caller asked for
    endpoint: str  # "/v1/chat/completions" or "/v1/completions"
    findings: tuple[Finding, ...] = ()
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    route: str | None  # route name from the policy's ``routes``; None when denied
    rule_id: str  # the matching rule's id, or "default"
    policy_version: str  # "sha256:<hex>" of the canonical policy
    operations: Mapping[str, Operation] = field(default_factory=lambda: MappingProxyType({}))
    message: str | None = None  # deny message shown to the caller
    fallback_route: str | None = None  # on-prem route to use if the managed one fails
    # Added by the policy engine: why the decision failed closed (rule ids, routes and entity
    # types only, never request text); None for an ordinary decision.
    reason: str | None = None
