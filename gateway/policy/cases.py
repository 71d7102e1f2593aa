"""Policy test files: cases of (request, identity, ...) → the decision the policy must reach.

Run by ``bastion policy test`` and by the test suite for every example policy. Detection is the
real one (``gateway.detect``) unless an ``analyze`` callable is passed in; the decision is the
same pure :func:`decide` the gateway runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gateway.detect.findings import Finding
from gateway.policy._schema import load_schema, schema_issues
from gateway.policy._yaml import read_yaml_file
from gateway.policy.decision import Decision, RequestFacts
from gateway.policy.engine import DEFAULT_RULE_ID, decide
from gateway.policy.errors import Issue, PolicyFileError
from gateway.policy.model import Policy
from gateway.vocabulary import Endpoint

__all__ = [
    "Analyzer",
    "CaseResult",
    "PolicyCase",
    "TestReport",
    "detector_for",
    "load_cases",
    "run_cases",
]

DEFAULT_IDENTITY = "spiffe://bastion.test/policy-test"
DEFAULT_MODEL = "default"
DEFAULT_ENDPOINT = Endpoint.CHAT.path

Analyzer = Callable[[Mapping[str, Any]], list[Finding]]


@dataclass(frozen=True, slots=True)
class PolicyCase:
    name: str
    line: int
    body: Mapping[str, Any] = field(repr=False)
    identity: str
    model: str
    endpoint: str
    headers: Mapping[str, str]
    expect: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: PolicyCase
    decision: Decision
    found: tuple[str, ...]  # entity types at or above the threshold, sorted
    failures: tuple[str, ...]  # empty when the case passed

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True, slots=True)
class TestReport:
    policy: Policy
    results: tuple[CaseResult, ...]
    uncovered: tuple[str, ...]  # rule ids (and "default") no case reached

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)


def load_cases(path: str | Path) -> tuple[PolicyCase, ...]:
    """Read a policy test file; every problem is reported with file:line:col."""
    doc = read_yaml_file(Path(path))
    if not isinstance(doc.data, dict):
        raise PolicyFileError(doc.file, (doc.issue([], "expected a mapping with 'cases'"),))
    issues = schema_issues(doc, load_schema("tests.schema.json"))
    if issues:
        raise PolicyFileError(doc.file, tuple(issues))
    defaults: dict[str, Any] = doc.data.get("defaults", {})
    cases: list[PolicyCase] = []
    bad: list[Issue] = []
    for i, raw in enumerate(doc.data["cases"]):
        line, _ = doc.locate(["cases", i])
        if ("text" in raw) == ("request" in raw):
            bad.append(doc.issue(["cases", i], "give exactly one of 'text' or 'request'"))
            continue
        body: dict[str, Any] = (
            raw["request"]
            if "request" in raw
            else {"messages": [{"role": "user", "content": raw["text"]}]}
        )
        model = raw.get("model") or body.get("model") or defaults.get("model") or DEFAULT_MODEL
        endpoint = (
            raw.get("endpoint")
            or defaults.get("endpoint")
            or (Endpoint.COMPLETIONS.path if "prompt" in body else DEFAULT_ENDPOINT)
        )
        headers = {**defaults.get("headers", {}), **raw.get("headers", {})}
        cases.append(
            PolicyCase(
                name=raw["name"],
                line=line,
                body=body,
                identity=raw.get("identity") or defaults.get("identity") or DEFAULT_IDENTITY,
                model=str(model),
                endpoint=endpoint,
                headers=MappingProxyType(headers),
                expect=MappingProxyType(raw["expect"]),
            )
        )
    if bad:
        raise PolicyFileError(doc.file, tuple(bad))
    return tuple(cases)


def detector_for(policy: Policy) -> Analyzer:
    """Real detection for ``policy``: ``gateway.detect.Detector`` over ``extract_texts(body)``."""
    from gateway.detect import Detector, extract_texts

    detector = Detector(policy.detection)

    def analyze(body: Mapping[str, Any]) -> list[Finding]:
        findings: list[Finding] = detector.analyze(extract_texts(body))
        return findings

    return analyze


def facts_for(case: PolicyCase, findings: list[Finding]) -> RequestFacts:
    return RequestFacts(
        identity=case.identity,
        model=case.model,
        endpoint=case.endpoint,
        findings=tuple(findings),
        headers=case.headers,
    )


def run_cases(
    policy: Policy, cases: tuple[PolicyCase, ...], analyze: Analyzer | None = None
) -> TestReport:
    """Run every case; a case fails when any expected field differs from the decision."""
    analyze = analyze if analyze is not None else detector_for(policy)
    results: list[CaseResult] = []
    hit: set[str] = set()
    rule_ids = [r.id for r in policy.rules] + [DEFAULT_RULE_ID]
    for case in cases:
        findings = analyze(case.body)
        decision = decide(facts_for(case, findings), policy)
        hit.add(decision.rule_id)
        found = tuple(sorted({f.entity_type for f in findings if f.score >= policy.threshold}))
        failures = _compare(case.expect, decision, found)
        if case.expect.get("rule", DEFAULT_RULE_ID) not in rule_ids:
            failures += (f"the policy has no rule {case.expect['rule']!r}",)
        results.append(CaseResult(case, decision, found, failures))
    uncovered = tuple(r for r in rule_ids if r not in hit)
    return TestReport(policy, tuple(results), uncovered)


def _compare(
    expect: Mapping[str, Any], decision: Decision, found: tuple[str, ...]
) -> tuple[str, ...]:
    failures: list[str] = []
    for key, got in (
        ("action", str(decision.action)),
        ("route", decision.route),
        ("rule", decision.rule_id),
    ):
        if key in expect and expect[key] != got:
            failures.append(f"expected {key} {expect[key]!r}, got {got!r}")
    missing = [e for e in expect.get("entities", ()) if e not in found]
    if missing:
        failures.append(f"expected entities {missing} to be found; found {list(found)}")
    for entity_type, op in expect.get("operations", {}).items():
        got_op = decision.operations.get(entity_type)
        if got_op != op:
            failures.append(
                f"expected operation {op!r} for {entity_type}, got {got_op and str(got_op)!r}"
            )
    return tuple(failures)
