"""Every example policy in policies/ passes its own test file, through real detection, and its
cases reach every rule and the default."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy import load_policy
from gateway.policy.cases import load_cases, run_cases

POLICIES = Path(__file__).resolve().parents[2] / "policies"
NAMES = ["default", "hipaa", "gdpr", "finra"]


@pytest.mark.parametrize("name", NAMES, ids=NAMES)
def test_example_policy_passes_its_tests(name: str) -> None:
    """policies/<name>.yaml decides every case in policies/tests/<name>.tests.yaml as expected."""
    policy = load_policy(POLICIES / f"{name}.yaml")
    report = run_cases(policy, load_cases(POLICIES / "tests" / f"{name}.tests.yaml"))
    failures = {r.case.name: r.failures for r in report.results if not r.passed}
    assert failures == {}
    assert report.uncovered == ()


def test_every_example_has_a_test_file() -> None:
    """Each policy file in policies/ has a test file, and no test file lacks its policy."""
    policies = {p.stem for p in POLICIES.glob("*.yaml")}
    tests = {p.name.removesuffix(".tests.yaml") for p in (POLICIES / "tests").glob("*.yaml")}
    assert policies == tests == set(NAMES)
