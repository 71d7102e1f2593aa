"""The decision: first match wins, thresholds, globs, headers, fail-closed managed outcomes."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from gateway.detect.findings import Finding
from gateway.policy import (
    Action,
    Decision,
    Operation,
    Policy,
    RequestFacts,
    decide,
    deny_without_policy,
    explain,
    fail_closed,
    load_policy_text,
)
from tests.policy._policies import BASE


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy_text(BASE, file="base.yaml")


def _f(entity: str, score: float = 0.9) -> Finding:
    return Finding(entity, score, "messages[0].content", 0, 4, "test")


def _facts(
    *findings: Finding,
    identity: str = "spiffe://corp.test/support/bot",
    model: str = "gpt-4o-mini",
    endpoint: str = "/v1/chat/completions",
    headers: dict[str, str] | None = None,
) -> RequestFacts:
    return RequestFacts(
        identity=identity,
        model=model,
        endpoint=endpoint,
        findings=tuple(findings),
        headers=MappingProxyType(headers or {}),
    )


CASES = [
    # (facts, action, route, rule, operations)
    (_facts(), Action.MANAGED, "openai", "default", {}),
    (_facts(_f("AWS_ACCESS_KEY")), Action.DENY, None, "secrets-deny", {}),
    (_facts(_f("PASSWORD", 0.49)), Action.MANAGED, "openai", "default", {}),
    (_facts(_f("PASSWORD", 0.5)), Action.DENY, None, "secrets-deny", {}),
    (
        _facts(_f("US_SSN", 0.85), identity="spiffe://corp.test/billing/api"),
        Action.ONPREM,
        "onprem",
        "billing-ssn-onprem",
        {},
    ),
    (
        _facts(_f("US_SSN", 0.7), identity="spiffe://corp.test/billing/api"),
        Action.DENY,
        None,
        "ssn-deny",
        {},
    ),
    (
        _facts(_f("US_SSN", 0.9), identity="spiffe://corp.test/billing/api/v2"),
        Action.DENY,
        None,
        "ssn-deny",
        {},
    ),
    (
        _facts(_f("US_SSN", 0.95), _f("AWS_ACCESS_KEY"), identity="spiffe://corp.test/billing/a"),
        Action.DENY,
        None,
        "secrets-deny",
        {},
    ),
    (_facts(headers={"x-tenant": "acme"}), Action.ONPREM, "onprem", "tenant-onprem", {}),
    (_facts(headers={"X-TENANT": "globex-eu"}), Action.ONPREM, "onprem", "tenant-onprem", {}),
    (_facts(headers={"x-tenant": "initech"}), Action.MANAGED, "openai", "default", {}),
    (
        _facts(endpoint="/v1/completions", model="llama-3/8b"),
        Action.ONPREM,
        "onprem",
        "completions-onprem",
        {},
    ),
    (_facts(endpoint="/v1/completions", model="gpt-4"), Action.MANAGED, "openai", "default", {}),
    (
        _facts(_f("PERSON"), _f("LOCATION", 0.6)),
        Action.MANAGED,
        "openai",
        "names-managed",
        {"PERSON": Operation.PSEUDONYMIZE, "LOCATION": Operation.REDACT},
    ),
    (
        _facts(_f("PERSON"), _f("DATE_TIME", 0.2)),
        Action.MANAGED,
        "openai",
        "names-managed",
        {"PERSON": Operation.PSEUDONYMIZE},
    ),
    (_facts(_f("PERSON"), _f("PHONE_NUMBER")), Action.ONPREM, "onprem", "names-managed", {}),
    (
        _facts(_f("EMAIL_ADDRESS"), _f("IP_ADDRESS")),
        Action.MANAGED,
        "openai",
        "email-managed-default",
        {"EMAIL_ADDRESS": Operation.HASH, "IP_ADDRESS": Operation.HASH},
    ),
    (_facts(_f("IP_ADDRESS")), Action.ONPREM, "onprem", "default", {}),
]
IDS = [
    "clean-goes-to-default",
    "secret-denied",
    "below-threshold-ignored",
    "at-threshold-counts",
    "identity-glob-and-min-score",
    "below-rule-min-score-falls-through",
    "single-star-stops-at-slash",
    "first-match-wins",
    "header-exact",
    "header-name-case-insensitive-and-glob",
    "header-mismatch",
    "endpoint-and-double-star-model",
    "model-glob-mismatch",
    "sanitize-per-entity",
    "ignored-finding-needs-no-operation",
    "uncovered-type-fails-closed-onprem",
    "sanitize-default-covers-all",
    "managed-default-with-finding-fails-closed",
]


@pytest.mark.parametrize(("facts", "action", "route", "rule", "ops"), CASES, ids=IDS)
def test_decision_table(
    policy: Policy,
    facts: RequestFacts,
    action: Action,
    route: str | None,
    rule: str,
    ops: dict[str, Operation],
) -> None:
    """Each request gets the action, route, rule and operations the policy's semantics imply."""
    d = decide(facts, policy)
    assert (d.action, d.route, d.rule_id, dict(d.operations)) == (action, route, rule, ops)
    assert d.policy_version == policy.version


def test_managed_decision_names_fallback(policy: Policy) -> None:
    """A managed decision carries the route's on-prem fallback."""
    d = decide(_facts(), policy)
    assert d.fallback_route == "onprem"
    assert d.reason is None


def test_fail_closed_reason_names_types_not_text(policy: Policy) -> None:
    """A managed request with an uncovered type fails closed and says which type, not the text."""
    d = decide(_facts(_f("PERSON"), _f("PHONE_NUMBER")), policy)
    assert d.reason is not None
    assert "PHONE_NUMBER" in d.reason
    assert "names-managed" in d.reason


def test_on_error_deny_fails_closed_to_deny() -> None:
    """With on_error: deny, an uncovered managed request is refused with a message."""
    p = load_policy_text(BASE.replace("on_error: onprem", "on_error: deny"))
    d = decide(_facts(_f("IP_ADDRESS")), p)
    assert (d.action, d.route, d.rule_id) == (Action.DENY, None, "default")
    assert d.message


def test_fail_closed_helper_uses_on_error(policy: Policy) -> None:
    """fail_closed() routes to the on_error route with the reason given."""
    d = fail_closed(policy, rule_id="detect", reason="detector raised")
    assert (d.action, d.route, d.rule_id, d.reason) == (
        Action.ONPREM,
        "onprem",
        "detect",
        "detector raised",
    )


def test_no_policy_denies() -> None:
    """Without a policy the decision is deny, with no version to claim."""
    d = deny_without_policy()
    assert d.action is Action.DENY
    assert d.route is None
    assert d.policy_version == "none"


def test_explain_traces_rules_until_winner(policy: Policy) -> None:
    """explain() lists each rule tried, in order, with reasons, up to the first match."""
    facts = _facts(_f("PERSON"), _f("DATE_TIME", 0.2))
    result = explain(facts, policy)
    assert result.decision == decide(facts, policy)
    assert [t.rule_id for t in result.trace] == [
        "secrets-deny",
        "billing-ssn-onprem",
        "ssn-deny",
        "tenant-onprem",
        "completions-onprem",
        "names-managed",
    ]
    assert [t.matched for t in result.trace] == [False] * 5 + [True]
    assert "found PERSON (0.90)" in result.trace[-1].reasons[0]
    assert "header x-tenant is absent" in result.trace[3].reasons
    assert [f.entity_type for f in result.considered] == ["PERSON"]
    assert len(result.findings) == 2


def test_explain_never_repeats_header_values(policy: Policy) -> None:
    """Header values are the caller's data: the trace names the header but not its value."""
    result = explain(_facts(headers={"x-tenant": "secret-tenant-name"}), policy)
    text = repr(result.trace)
    assert "x-tenant" in text
    assert "secret-tenant-name" not in text


def test_decision_is_pure(policy: Policy) -> None:
    """The same facts and policy always give an equal decision."""
    facts = _facts(_f("EMAIL_ADDRESS"), headers={"x-tenant": "nobody"})
    assert decide(facts, policy) == decide(facts, policy)
    assert isinstance(decide(facts, policy), Decision)
