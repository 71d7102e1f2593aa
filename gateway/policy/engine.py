"""The decision: a pure function of (request facts, policy). No I/O, no clock, no randomness.

Semantics (documented for compliance officers in ``policies/README.md``):

- Findings scored below ``detection.threshold`` are ignored everywhere; a rule's
  ``when.entities.min_score`` can only raise that bar for the rule.
- Rules are tried in order; the first whose every condition holds wins. No match: the default
  route, as rule ``default``.
- A managed outcome needs an operation for every entity type found (the rule's ``sanitize`` map,
  else its ``default``). If a type has none, the request fails closed to ``defaults.on_error``
  (an on-prem route, or deny): nothing unsanitized reaches a managed API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from gateway.detect.findings import Finding
from gateway.policy._glob import glob_match
from gateway.policy.decision import Action, Decision, Operation, RequestFacts
from gateway.policy.model import (
    ANY_ENTITY,
    DENY,
    EntityCondition,
    Policy,
    Route,
    RouteKind,
    Then,
    When,
)

__all__ = [
    "DEFAULT_RULE_ID",
    "FAIL_CLOSED_MESSAGE",
    "NO_POLICY_VERSION",
    "Explanation",
    "RuleTrace",
    "decide",
    "deny_without_policy",
    "explain",
    "fail_closed",
]

DEFAULT_RULE_ID = "default"
NO_POLICY_VERSION = "none"
FAIL_CLOSED_MESSAGE = "Request refused: it could not be routed safely under the current policy."


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """One rule tried: whether it matched, and a reason per condition (no request text)."""

    rule_id: str
    matched: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Explanation:
    decision: Decision
    trace: tuple[RuleTrace, ...]  # rules tried, in order, up to and including the winner
    findings: tuple[Finding, ...]  # every finding given, those below the threshold included
    threshold: float

    @property
    def considered(self) -> tuple[Finding, ...]:
        """The findings the decision looked at (at or above the detection threshold)."""
        return _considered(self.findings, self.threshold)


def decide(facts: RequestFacts, policy: Policy) -> Decision:
    """The decision for one request under ``policy`` (first matching rule wins)."""
    return _evaluate(facts, policy, None)


def explain(facts: RequestFacts, policy: Policy) -> Explanation:
    """:func:`decide`, plus the rules tried and why each did or did not match."""
    trace: list[RuleTrace] = []
    decision = _evaluate(facts, policy, trace)
    return Explanation(decision, tuple(trace), facts.findings, policy.threshold)


def fail_closed(policy: Policy, *, rule_id: str, reason: str) -> Decision:
    """The ``on_error`` decision: on-prem route or deny. The gateway uses it too when detection
    or sanitization fails. ``reason`` must hold no request text."""
    if policy.on_error == DENY:
        return Decision(
            Action.DENY,
            None,
            rule_id,
            policy.version,
            message=FAIL_CLOSED_MESSAGE,
            reason=reason,
        )
    return Decision(Action.ONPREM, policy.on_error, rule_id, policy.version, reason=reason)


def deny_without_policy() -> Decision:
    """What every request gets while no policy has ever loaded."""
    return Decision(
        Action.DENY,
        None,
        DEFAULT_RULE_ID,
        NO_POLICY_VERSION,
        message=FAIL_CLOSED_MESSAGE,
        reason="no policy is loaded",
    )


def _considered(findings: tuple[Finding, ...], threshold: float) -> tuple[Finding, ...]:
    return tuple(f for f in findings if f.score >= threshold)


def _evaluate(facts: RequestFacts, policy: Policy, trace: list[RuleTrace] | None) -> Decision:
    considered = _considered(facts.findings, policy.threshold)
    headers = {k.lower(): v for k, v in facts.headers.items()}
    for rule in policy.rules:
        matched, reasons = _match(rule.when, facts, considered, headers, policy.threshold)
        if trace is not None:
            trace.append(RuleTrace(rule.id, matched, reasons))
        if matched:
            return _outcome(policy, rule.id, rule.then, considered)
    return _outcome(policy, DEFAULT_RULE_ID, Then(route=policy.default_route), considered)


def _outcome(policy: Policy, rule_id: str, then: Then, considered: tuple[Finding, ...]) -> Decision:
    if then.deny_message is not None or then.route is None:
        message = then.deny_message or FAIL_CLOSED_MESSAGE
        return Decision(Action.DENY, None, rule_id, policy.version, message=message)
    route: Route | None = policy.routes.get(then.route)
    if route is None:  # the loader refuses such policies; kept so decide() stays total
        return fail_closed(policy, rule_id=rule_id, reason=f"route '{then.route}' is not defined")
    if route.kind is RouteKind.ONPREM:
        return Decision(Action.ONPREM, route.name, rule_id, policy.version)
    operations: dict[str, Operation] = {}
    uncovered: list[str] = []
    for entity_type in sorted({f.entity_type for f in considered}):
        op = then.sanitize.get(entity_type, then.sanitize_default)
        if op is None:
            uncovered.append(entity_type)
        else:
            operations[entity_type] = op
    if uncovered:
        return fail_closed(
            policy,
            rule_id=rule_id,
            reason=(
                f"rule '{rule_id}' sends to managed route '{route.name}' but no sanitize "
                f"operation covers {', '.join(uncovered)}; failed closed to on_error "
                f"'{policy.on_error}'"
            ),
        )
    return Decision(
        Action.MANAGED,
        route.name,
        rule_id,
        policy.version,
        operations=MappingProxyType(operations),
        fallback_route=route.fallback,
    )


def _match(
    when: When,
    facts: RequestFacts,
    considered: tuple[Finding, ...],
    headers: Mapping[str, str],
    threshold: float,
) -> tuple[bool, tuple[str, ...]]:
    if when.is_catch_all:
        return True, ("no conditions: matches every request",)
    results: list[tuple[bool, str]] = []
    if when.entities is not None:
        results.append(_match_entities(when.entities, considered, threshold))
    for label, patterns, value in (
        ("identity", when.identity, facts.identity),
        ("model", when.model, facts.model),
        ("endpoint", when.endpoint, facts.endpoint),
    ):
        if patterns is not None:
            hit = glob_match(value, patterns)
            results.append(
                (True, f"{label} {value!r} matches {hit!r}")
                if hit is not None
                else (False, f"{label} {value!r} matches none of {list(patterns)}")
            )
    for name, patterns in (when.header or {}).items():
        got = headers.get(name)
        # Header values are the caller's: the reasons never repeat them.
        if got is None:
            results.append((False, f"header {name} is absent"))
        elif (hit := glob_match(got, patterns)) is not None:
            results.append((True, f"header {name} matches {hit!r}"))
        else:
            results.append((False, f"header {name} matches none of {list(patterns)}"))
    return all(ok for ok, _ in results), tuple(r for _, r in results)


def _match_entities(
    cond: EntityCondition, considered: tuple[Finding, ...], threshold: float
) -> tuple[bool, str]:
    bar = max(threshold, cond.min_score or 0.0)
    best: dict[str, float] = {}
    for f in considered:
        if f.score >= bar:
            best[f.entity_type] = max(best.get(f.entity_type, 0.0), f.score)
    found = set(best)
    parts: list[str] = []
    ok = True
    if cond.any:
        hits = found if ANY_ENTITY in cond.any else found & cond.any
        ok = ok and bool(hits)
        wanted = sorted(cond.any)
        parts.append(
            f"found {_fmt(hits, best)} (any of {wanted})" if hits else f"none of {wanted} found"
        )
    if cond.all:
        missing = cond.all - found
        ok = ok and not missing
        parts.append(
            f"all of {sorted(cond.all)} found"
            if not missing
            else f"missing {sorted(missing)} (all of {sorted(cond.all)} required)"
        )
    return ok, f"entities: {'; '.join(parts)} at score >= {bar:g}"


def _fmt(types: set[str], best: Mapping[str, float]) -> str:
    return ", ".join(f"{t} ({best[t]:.2f})" for t in sorted(types))
