"""Policy comparison: what a candidate policy decides differently, for shadow mode and replay.

One comparison (:func:`outcome_of`, :func:`differs`) and one report (:class:`ComparisonReport`)
serve both the live shadow policy (:meth:`gateway.policy.PolicyStore.shadow_compare`, request
by request) and ``bastion policy replay`` (:func:`replay_decisions`, over the audit trail), so
"shadow for a week, then replay the month" reads the same. The report groups differences by
``(old rule -> new rule, old action -> new action)`` with the count, the identities and models
affected and sample decision ids.

Replay re-decides a recorded decision from the facts its record holds (``inputs``: per entity
type the count and highest score, and keyed digests of the headers the live policy read; the
record's identity, model alias and endpoint) with the pure engine. That is exact, not an
estimate: :func:`gateway.policy.decide` looks at findings only through "is there a finding of
type T scoring at least S", which the highest score per type answers. A decision the trail
cannot re-decide is counted as *not replayable*, with the reason, never guessed:

- the record predates decision inputs (older format);
- the decision was not the policy's (``rate-limit``, a fail-closed ``error:*`` such as a
  residual after sanitization, no policy loaded, static routing without a policy: only a
  ``sha256:`` policy version is a policy's decision): the facts that caused it are not in the
  trail;
- the candidate's detection threshold is below the one the findings were kept at (detection
  drops findings below the live threshold, so the candidate would have seen more);
- the candidate reads a header the record did not keep, or matches it with a glob (a keyed
  digest answers only "equals this literal"), or no digest key was given to compare literals.

No I/O here: the caller streams the records and prints the report.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from gateway.detect.findings import Finding
from gateway.policy.decision import Decision, RequestFacts
from gateway.policy.engine import decide
from gateway.policy.model import Policy

__all__ = [
    "ChangeKey",
    "ComparisonReport",
    "DecisionOutcome",
    "HeaderDigest",
    "differs",
    "facts_from_record",
    "header_names",
    "outcome_of",
    "replay_decisions",
]

# A header's keyed digest as the trail keeps it: ``HeaderDigest(name, value) -> "hmac-sha256:…"``.
HeaderDigest = Callable[[str, str], str]

CAVEAT_DETECTION = (
    "findings are the ones recorded when each request was decided: a candidate's higher "
    "threshold and its rules' min_score are applied to them (a lower threshold makes records "
    "not replayable), but changes to its detection section (recognizers, deny lists, entity "
    "list) cannot be replayed from the trail"
)
MAX_SAMPLES = 5  # sample decision ids kept per change
MAX_NAMES = 100  # identities / models listed per change (the rest are counted)
MAX_REASONS = 32  # distinct not-replayable reasons told apart
OTHER_REASONS = "other reasons (more distinct reasons than are listed)"
_GLOB = frozenset("*?")
_REPLAY_RECOGNIZER = "audit-replay"
# Rule ids the gateway writes for decisions that did not come from the policy's rules.
_NOT_POLICY_RULES = frozenset({"rate-limit"})


class DecisionOutcome(NamedTuple):
    """What a decision did, in the terms both sides of a comparison have."""

    rule_id: str
    action: str
    route: str | None
    operations: tuple[tuple[str, str], ...]  # sorted (entity type, operation)


def outcome_of(decision: Decision) -> DecisionOutcome:
    ops = tuple(sorted((str(k), str(v)) for k, v in decision.operations.items()))
    return DecisionOutcome(decision.rule_id, str(decision.action), decision.route, ops)


def differs(a: DecisionOutcome, b: DecisionOutcome) -> bool:
    """The one definition of "decided differently": rule, action, route or operations."""
    return a != b


class ChangeKey(NamedTuple):
    old_rule: str
    new_rule: str
    old_action: str
    new_action: str


@dataclass
class _Change:
    count: int = 0
    identities: dict[str, None] = field(default_factory=dict)  # ordered set, bounded
    models: dict[str, None] = field(default_factory=dict)
    more_identities: int = 0
    more_models: int = 0
    samples: list[str] = field(default_factory=list)
    routes: dict[tuple[str | None, str | None], int] = field(default_factory=dict)


def _bounded_add(names: dict[str, None], value: str) -> bool:
    """Add ``value``; False when the set is full and ``value`` is new (counted, not kept)."""
    if value in names:
        return True
    if len(names) >= MAX_NAMES:
        return False
    names[value] = None
    return True


class ComparisonReport:
    """Differences between the decisions taken (``old``) and a candidate policy's (``new``).
    Bounded in memory: per change at most :data:`MAX_NAMES` identities and models (more are
    counted) and :data:`MAX_SAMPLES` sample ids."""

    def __init__(self, *, mode: str, candidate: Policy | None = None) -> None:
        self.mode = mode  # "replay" or "shadow"
        self.candidate_name = candidate.name if candidate else None
        self.candidate_version = candidate.version if candidate else None
        self.decisions = 0
        self.unchanged = 0
        self.not_replayable: dict[str, int] = {}
        self._changes: dict[ChangeKey, _Change] = {}
        self.window: tuple[str | None, str | None] = (None, None)
        self.first_time: str | None = None
        self.last_time: str | None = None

    @property
    def changed(self) -> int:
        return sum(c.count for c in self._changes.values())

    @property
    def replayed(self) -> int:
        return self.unchanged + self.changed

    def add(
        self,
        old: DecisionOutcome,
        new: DecisionOutcome,
        *,
        identity: str,
        model: str,
        sample_id: str | None = None,
    ) -> bool:
        """Count one compared decision; True if the candidate decided differently."""
        self.decisions += 1
        if not differs(old, new):
            self.unchanged += 1
            return False
        key = ChangeKey(old.rule_id, new.rule_id, old.action, new.action)
        change = self._changes.setdefault(key, _Change())
        change.count += 1
        if not _bounded_add(change.identities, identity):
            change.more_identities += 1
        if not _bounded_add(change.models, model):
            change.more_models += 1
        if sample_id is not None and len(change.samples) < MAX_SAMPLES:
            change.samples.append(sample_id)
        routes = (old.route, new.route)
        change.routes[routes] = change.routes.get(routes, 0) + 1
        return True

    def skip(self, reason: str) -> None:
        """Count a decision that cannot be re-decided, by reason (never guessed). Reasons may
        quote a rule id from the trail, so at most :data:`MAX_REASONS` are told apart."""
        self.decisions += 1
        if reason not in self.not_replayable and len(self.not_replayable) >= MAX_REASONS:
            reason = OTHER_REASONS
        self.not_replayable[reason] = self.not_replayable.get(reason, 0) + 1

    def changes(self) -> list[tuple[ChangeKey, _Change]]:
        return sorted(self._changes.items(), key=lambda kv: (-kv[1].count, kv[0]))

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "candidate": {"name": self.candidate_name, "version": self.candidate_version},
            "window": {"since": self.window[0], "until": self.window[1]},
            "records": {"first_time": self.first_time, "last_time": self.last_time},
            "decisions": self.decisions,
            "replayed": self.replayed,
            "unchanged": self.unchanged,
            "changed": self.changed,
            "not_replayable": dict(sorted(self.not_replayable.items())),
            "caveats": [CAVEAT_DETECTION] if self.mode == "replay" else [],
            "changes": [
                {
                    "old_rule": key.old_rule,
                    "new_rule": key.new_rule,
                    "old_action": key.old_action,
                    "new_action": key.new_action,
                    "count": change.count,
                    "identities": sorted(change.identities),
                    "more_identities": change.more_identities,
                    "models": sorted(change.models),
                    "more_models": change.more_models,
                    "routes": [
                        {"old_route": old, "new_route": new, "count": n}
                        for (old, new), n in sorted(
                            change.routes.items(), key=lambda kv: (-kv[1], str(kv[0]))
                        )
                    ],
                    "sample_decision_ids": list(change.samples),
                }
                for key, change in self.changes()
            ],
        }

    def to_text(self) -> str:
        what = "policy replay" if self.mode == "replay" else "shadow policy"
        lines = [
            f"{what}: candidate {self.candidate_name} {self.candidate_version}",
        ]
        if self.window != (None, None):
            lines.append(f"window: since {self.window[0] or '-'} until {self.window[1] or '-'}")
        skipped = sum(self.not_replayable.values())
        lines.append(
            f"decisions: {self.decisions}; re-decided: {self.replayed}; unchanged: "
            f"{self.unchanged}; changed: {self.changed}; not replayable: {skipped}"
        )
        for reason, count in sorted(self.not_replayable.items()):
            lines.append(f"  not replayable: {count} ({reason})")
        if self.mode == "replay":
            lines.append(f"note: {CAVEAT_DETECTION}")
        if not self._changes:
            lines.append("no decision would change")
        for key, change in self.changes():
            lines.append(
                f"{key.old_rule} -> {key.new_rule}, {key.old_action} -> {key.new_action}: "
                f"{change.count} decision(s)"
            )
            more = f" (+{change.more_identities} more)" if change.more_identities else ""
            lines.append(f"  identities: {', '.join(sorted(change.identities))}{more}")
            more = f" (+{change.more_models} more)" if change.more_models else ""
            lines.append(f"  models: {', '.join(sorted(change.models))}{more}")
            if change.samples:
                lines.append(f"  sample decision ids: {', '.join(change.samples)}")
        return "\n".join(lines)


def header_names(policy: Policy | None) -> frozenset[str]:
    """The (lower-case) header names any rule of ``policy`` reads."""
    if policy is None:
        return frozenset()
    return frozenset(name for rule in policy.rules for name in (rule.when.header or {}))


def _header_patterns(policy: Policy) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for rule in policy.rules:
        for name, patterns in (rule.when.header or {}).items():
            out.setdefault(name, set()).update(patterns)
    return out


class _Candidate:
    """The candidate policy with what replay needs precomputed (header literals, a cache)."""

    def __init__(self, policy: Policy, header_digest: HeaderDigest | None) -> None:
        self.policy = policy
        self.patterns = _header_patterns(policy)
        self.globbed = frozenset(
            name for name, pats in self.patterns.items() if any(_GLOB & set(p) for p in pats)
        )
        self.literals: dict[str, dict[str, str]] = {}
        if header_digest is not None:
            for name, pats in self.patterns.items():
                self.literals[name] = {header_digest(name, p): p for p in pats}
        self.header_digest = header_digest
        self.cache: dict[tuple[Any, ...], DecisionOutcome] = {}


def _unmatched(patterns: set[str]) -> str:
    """A header value that equals none of the literal ``patterns``."""
    value = "\x00bastion-replay: recorded value matches no literal of the candidate"
    while value in patterns:
        value += "\x00"
    return value


def facts_from_record(data: Mapping[str, Any], candidate: _Candidate) -> RequestFacts | str:
    """The facts a decision record holds, for ``candidate``; a reason string if it cannot."""
    rule_id = str(data.get("rule_id", ""))
    if rule_id in _NOT_POLICY_RULES or rule_id.startswith("error:"):
        return f"decision {rule_id!r} was not taken by the policy's rules"
    version = str(data.get("policy_version", ""))
    if not version.startswith("sha256:"):
        # "none": no policy had loaded; "static": routed by the config's models alone, nothing
        # was scanned. Only a policy's decision (versioned by its content hash) is replayed.
        return f"not decided by a policy (policy version {version[:16]!r})"
    inputs = data.get("inputs")
    if not isinstance(inputs, Mapping):
        return "older record format: no decision inputs recorded"
    entities = inputs.get("entities")
    if not isinstance(entities, Mapping):
        return "decision inputs are malformed"
    kept_at = inputs.get("threshold")
    if not isinstance(kept_at, int | float) or isinstance(kept_at, bool):
        return "the record does not say at which detection threshold findings were kept"
    if candidate.policy.threshold < kept_at:
        # Detection dropped findings below the live threshold: the candidate would see more.
        return (
            f"the candidate's detection threshold {candidate.policy.threshold:g} is below the "
            f"{kept_at:g} the findings were kept at"
        )
    findings: list[Finding] = []
    for entity_type, stats in sorted(entities.items()):
        score = stats.get("max_score") if isinstance(stats, Mapping) else None
        if not isinstance(score, int | float) or isinstance(score, bool):
            return "decision inputs are malformed"
        # One finding at the highest score stands for all of the type: decide() asks only
        # whether some finding of a type reaches a score (see the module docstring).
        findings.append(Finding(str(entity_type), float(score), "", 0, 0, _REPLAY_RECOGNIZER))
    recorded = inputs.get("headers")
    recorded = recorded if isinstance(recorded, Mapping) else {}
    headers: dict[str, str] = {}
    for name, patterns in candidate.patterns.items():
        if name not in recorded:
            return f"the candidate reads header {name!r}, which the record did not keep"
        digest = recorded[name]
        if digest is None:
            continue  # the request did not carry it
        if name in candidate.globbed:
            return f"the candidate matches header {name!r} with a glob; the trail holds a digest"
        if candidate.header_digest is None:
            return f"header {name!r} needs the audit digest key to compare (use --config)"
        literal = candidate.literals[name].get(str(digest))
        headers[name] = literal if literal is not None else _unmatched(patterns)
    return RequestFacts(
        identity=str(data.get("identity", "")),
        model=str(data.get("model", "")),
        endpoint=str(data.get("endpoint", "")),
        findings=tuple(findings),
        headers=MappingProxyType(headers),
    )


def _recorded_outcome(data: Mapping[str, Any]) -> DecisionOutcome:
    ops = data.get("operations")
    ops = ops if isinstance(ops, Mapping) else {}
    route = data.get("route")
    return DecisionOutcome(
        str(data.get("rule_id", "")),
        str(data.get("action", "")),
        None if route is None else str(route),
        tuple(sorted((str(k), str(v)) for k, v in ops.items())),
    )


def _facts_key(facts: RequestFacts) -> tuple[Any, ...]:
    return (
        facts.identity,
        facts.model,
        facts.endpoint,
        tuple((f.entity_type, f.score) for f in facts.findings),
        tuple(sorted(facts.headers.items())),
    )


# Replay is mostly the same facts again (a service asking the same kind of thing): records that
# agree byte for byte on every field the decision uses are decided once. Canonical JSON (RFC
# 8785) orders the data's keys as below, so three slices of the body hold exactly those fields
# (action | endpoint..policy_version | route, rule_id). A string value cannot contain an
# unescaped quote, so each ``,"key":`` marker found once is the data's own key; a body where a
# used key occurs more than once (a header named like one, or a non-canonical body) is parsed
# in full instead.
_USED_KEYS = tuple(
    b'"%s":' % k
    for k in (
        b"action",
        b"endpoint",
        b"identity",
        b"inputs",
        b"model",
        b"operations",
        b"policy_version",
        b"route",
        b"rule_id",
    )
)
_SLICE_MARKERS = (b',"client_addr":', b',"endpoint":', b',"request_id":', b',"route":')
_PREFIX = b'{"data":{"action":'
_END_MARKER = b',"text_digests":'
_MEMO_LIMIT = 100_000


def _memo_key(body: bytes) -> bytes | None:
    if not body.startswith(_PREFIX):
        return None
    for key in _USED_KEYS:
        if body.count(key) != 1:
            return None
    positions = []
    for marker in (*_SLICE_MARKERS, _END_MARKER):
        if body.count(marker) != 1:
            return None
        positions.append(body.find(marker))
    client, endpoint, request, route, end = positions
    if not client < endpoint < request < route < end:
        return None
    return b"\x00".join((body[:client], body[endpoint:request], body[route:end]))


_Memo = tuple[DecisionOutcome | None, RequestFacts | str, DecisionOutcome | None]


def _decide_record(body: bytes, candidate: _Candidate) -> _Memo:
    try:
        data = json.loads(body)["data"]
    except (ValueError, KeyError, TypeError):
        return None, "record body is not a well-formed decision record", None
    if not isinstance(data, Mapping):
        return None, "record body is not a well-formed decision record", None
    facts = facts_from_record(data, candidate)
    if isinstance(facts, str):
        return None, facts, None
    key = _facts_key(facts)
    new = candidate.cache.get(key)
    if new is None:
        new = outcome_of(decide(facts, candidate.policy))
        if len(candidate.cache) < _MEMO_LIMIT:
            candidate.cache[key] = new
    return _recorded_outcome(data), facts, new


def replay_decisions(
    records: Iterable[tuple[str, str, bytes]],
    policy: Policy,
    *,
    header_digest: HeaderDigest | None = None,
    report: ComparisonReport | None = None,
) -> ComparisonReport:
    """Re-decide every decision record ``(decision id, time, canonical body)`` with ``policy``
    and compare with what was decided. Pure: reads only what it is given."""
    report = report or ComparisonReport(mode="replay", candidate=policy)
    candidate = _Candidate(policy, header_digest)
    memo: dict[bytes, _Memo] = {}
    for decision_id, time, body in records:
        if report.first_time is None:
            report.first_time = time
        report.last_time = time
        key = _memo_key(body)
        result = memo.get(key) if key is not None else None
        if result is None:
            result = _decide_record(body, candidate)
            if key is not None and len(memo) < _MEMO_LIMIT:
                memo[key] = result
        old, facts, new = result
        if isinstance(facts, str) or old is None or new is None:
            report.skip(facts if isinstance(facts, str) else "not replayable")
            continue
        report.add(old, new, identity=facts.identity, model=facts.model, sample_id=decision_id)
    return report
