"""The policy engine: compliance officers' YAML rules → a routing decision per request.

Load a policy with :func:`load_policy` (or keep one live with :class:`PolicyStore`), build
``RequestFacts`` (identity, model, endpoint, headers, detector findings) and call :func:`decide`.
The decision is pure: the same facts and policy give the same decision in the gateway, in
``bastion policy test`` and when replaying the audit trail. ``policy.detection`` is the
``DetectionSpec`` to build the ``Detector`` from.

Exceptions: see :mod:`gateway.policy.errors`.
"""

from __future__ import annotations

from gateway.policy._glob import glob_match
from gateway.policy.decision import Action, Decision, Operation, RequestFacts
from gateway.policy.engine import (
    DEFAULT_RULE_ID,
    Explanation,
    RuleTrace,
    decide,
    deny_without_policy,
    explain,
    fail_closed,
)
from gateway.policy.errors import Issue, PolicyError, PolicyFileError, PolicyTestError, Severity
from gateway.policy.loader import check_policy_file, load_policy, load_policy_text
from gateway.policy.model import Policy, Route, RouteKind, Rule
from gateway.policy.replay import ComparisonReport, replay_decisions
from gateway.policy.store import PolicyStore

__all__ = [
    "DEFAULT_RULE_ID",
    "Action",
    "ComparisonReport",
    "Decision",
    "Explanation",
    "Issue",
    "Operation",
    "Policy",
    "PolicyError",
    "PolicyFileError",
    "PolicyStore",
    "PolicyTestError",
    "RequestFacts",
    "Route",
    "RouteKind",
    "Rule",
    "RuleTrace",
    "Severity",
    "check_policy_file",
    "decide",
    "deny_without_policy",
    "explain",
    "fail_closed",
    "glob_match",
    "load_policy",
    "load_policy_text",
    "replay_decisions",
]
