"""``bastion policy``: compliance officers' tools for routing policies.

- ``lint FILE...``: schema and semantic checks; every finding as ``file:line:col: ...``.
- ``test FILE TESTS.yaml``: run the cases through real detection and the decision; coverage.
- ``explain FILE --request req.json --identity spiffe://...``: what was found (masked), which
  rules were tried and why, and the decision.
- ``replay --audit (--config FILE | --sqlite PATH | --dsn DSN) --policy NEW.yaml``: re-decide
  every decision the audit trail recorded (``--since``/``--until``) under a candidate policy
  and report what would change (:mod:`gateway.policy.replay`). The trail is opened read-only
  and nothing is forwarded anywhere.

Request text is never printed: ``explain`` shows each finding's first and last character only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.detect.findings import Finding, TextRef
    from gateway.policy.cases import TestReport
    from gateway.policy.decision import Decision
    from gateway.policy.engine import Explanation

__all__ = ["mask_text", "register"]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "policy",
        help="lint, test and explain routing policies",
        description="Compliance officers' tools for routing policies (see policies/README.md).",
    )
    sub = parser.add_subparsers(dest="policy_command", metavar="ACTION", required=True)

    lint = sub.add_parser("lint", help="check policy files; exit 1 if any has an error")
    lint.add_argument("files", nargs="+", type=Path, metavar="FILE")
    lint.set_defaults(func=_lint)

    test = sub.add_parser("test", help="run a policy's test cases with real detection")
    test.add_argument("policy", type=Path, metavar="FILE")
    test.add_argument("tests", type=Path, metavar="TESTS.yaml")
    test.add_argument("--json", action="store_true", help="machine-readable output")
    test.add_argument(
        "--require-coverage",
        action="store_true",
        help="also fail when a rule (or the default) is reached by no case",
    )
    test.set_defaults(func=_test)

    explain = sub.add_parser("explain", help="explain the decision for one request")
    explain.add_argument("policy", type=Path, metavar="FILE")
    explain.add_argument("--request", type=Path, required=True, help="request body (JSON)")
    explain.add_argument("--identity", required=True, help="caller, e.g. spiffe://corp/billing")
    explain.add_argument("--model", help="model alias (default: the body's 'model')")
    explain.add_argument("--endpoint", default=None, help="default: /v1/chat/completions")
    explain.add_argument(
        "--header", action="append", default=[], metavar="NAME=VALUE", help="request header"
    )
    explain.add_argument("--json", action="store_true", help="machine-readable output")
    explain.set_defaults(func=_explain)

    replay = sub.add_parser(
        "replay",
        help="re-decide the audit trail's decisions under a candidate policy; report changes",
    )
    replay.add_argument(
        "--audit",
        action="store_true",
        help="replay the audit trail's decisions (the source replay reads; the default)",
    )
    source = replay.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="gateway config YAML with an audit: section")
    source.add_argument("--sqlite", type=Path, metavar="PATH", help="SQLite audit trail file")
    source.add_argument("--dsn", help="PostgreSQL conninfo or URL (password via PGPASSWORD)")
    replay.add_argument("--policy", type=Path, required=True, metavar="NEW.yaml")
    replay.add_argument("--since", help="from this date/time (inclusive, RFC 3339, UTC if naive)")
    replay.add_argument("--until", help="to this date/time (exclusive)")
    replay.add_argument(
        "--digest-key-file",
        type=Path,
        help="the audit digest key (to compare header literals; --config reads it from the "
        "audit: section)",
    )
    replay.add_argument("--json", action="store_true", help="machine-readable output")
    replay.set_defaults(func=_replay)


def mask_text(value: str) -> str:
    """``4111111111111111`` → ``4***…***1``; values of 4 characters or fewer → ``****``."""
    if len(value) <= 4:
        return "****"
    return f"{value[0]}***…***{value[-1]}"


# ---- lint ---------------------------------------------------------------------------------


def _lint(args: argparse.Namespace) -> int:
    from gateway.policy import Severity, check_policy_file

    errors = warnings = 0
    for path in args.files:
        policy, issues = check_policy_file(path)
        for issue in issues:
            print(issue)
        errors += sum(i.severity is Severity.ERROR for i in issues)
        warnings += sum(i.severity is Severity.WARNING for i in issues)
        if policy is not None:
            print(f"{path}: ok, policy {policy.name!r} version {policy.version}")
    print(f"{errors} error(s), {warnings} warning(s) in {len(args.files)} file(s)")
    return 1 if errors else 0


# ---- test ---------------------------------------------------------------------------------


def _test(args: argparse.Namespace) -> int:
    from gateway.policy import load_policy
    from gateway.policy.cases import load_cases, run_cases

    policy = load_policy(args.policy)
    cases = load_cases(args.tests)
    report = run_cases(policy, cases)
    if args.json:
        print(json.dumps(_report_json(report, args.tests), indent=2))
    else:
        _print_report(report, args.tests)
    if not report.passed:
        return 1
    return 1 if args.require_coverage and report.uncovered else 0


def _decision_json(d: Decision) -> dict[str, Any]:
    return {
        "action": str(d.action),
        "route": d.route,
        "rule": d.rule_id,
        "policy_version": d.policy_version,
        "operations": {k: str(v) for k, v in d.operations.items()},
        "message": d.message,
        "fallback_route": d.fallback_route,
        "reason": d.reason,
    }


def _report_json(report: TestReport, tests: Path) -> dict[str, Any]:
    return {
        "policy": report.policy.name,
        "policy_version": report.policy.version,
        "tests": str(tests),
        "passed": report.passed,
        "cases": [
            {
                "name": r.case.name,
                "line": r.case.line,
                "passed": r.passed,
                "failures": list(r.failures),
                "entities": list(r.found),
                "decision": _decision_json(r.decision),
            }
            for r in report.results
        ],
        "uncovered_rules": list(report.uncovered),
    }


def _print_report(report: TestReport, tests: Path) -> None:
    print(f"policy {report.policy.name!r} {report.policy.version}")
    for r in report.results:
        d = r.decision
        outcome = f"{d.action} {d.route or '-'} (rule {d.rule_id})"
        if r.passed:
            print(f"PASS  {r.case.name}: {outcome}")
        else:
            print(f"FAIL  {tests}:{r.case.line}: {r.case.name}: {'; '.join(r.failures)}")
            found = ", ".join(r.found) or "nothing"
            print(f"      got {outcome}; found {found}")
    rules = len(report.policy.rules) + 1
    covered = rules - len(report.uncovered)
    print(f"rule coverage: {covered}/{rules} (rules and the default)")
    if report.uncovered:
        print(f"  no case reaches: {', '.join(report.uncovered)}")
    passed = sum(r.passed for r in report.results)
    failed = len(report.results) - passed
    print(f"{passed} passed, {failed} failed")


# ---- explain ------------------------------------------------------------------------------


def _read_request(path: Path) -> dict[str, Any]:
    from gateway.policy.errors import Issue, PolicyFileError

    file = str(path)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        issue = Issue(file, 1, 1, "", f"cannot read the request: {exc.strerror}")
        raise PolicyFileError(file, (issue,)) from None
    except UnicodeDecodeError:
        raise PolicyFileError(file, (Issue(file, 1, 1, "", "not UTF-8 text"),)) from None
    except json.JSONDecodeError as exc:
        issue = Issue(file, exc.lineno, exc.colno, "", f"not valid JSON: {exc.msg}")
        raise PolicyFileError(file, (issue,)) from None
    if not isinstance(body, dict):
        issue = Issue(file, 1, 1, "", "expected a JSON object (an OpenAI request body)")
        raise PolicyFileError(file, (issue,))
    return body


def _headers(pairs: list[str]) -> dict[str, str]:
    from gateway.policy.errors import PolicyError

    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise PolicyError(f"--header expects NAME=VALUE, got {name or pair!r} without '='")
        out[name.strip().lower()] = value
    return out


def _explain(args: argparse.Namespace) -> int:
    from gateway.policy import RequestFacts, explain, load_policy
    from gateway.policy.cases import detector_for

    policy = load_policy(args.policy)
    body = _read_request(args.request)
    from gateway.detect.texts import extract_texts

    texts: list[TextRef] = extract_texts(body)
    analyze = detector_for(policy)
    findings = analyze(body)
    model = args.model or str(body.get("model") or "default")
    endpoint = args.endpoint or ("/v1/completions" if "prompt" in body else "/v1/chat/completions")
    facts = RequestFacts(
        identity=args.identity,
        model=model,
        endpoint=endpoint,
        findings=tuple(findings),
        headers=_headers(args.header),
    )
    result = explain(facts, policy)
    by_path = {t.path: t.text for t in texts}
    if args.json:
        print(json.dumps(_explain_json(result, by_path), indent=2))
    else:
        _print_explain(result, by_path)
    return 0


def _masked(f: Finding, by_path: dict[str, str]) -> str:
    return mask_text(by_path.get(f.path, "")[f.start : f.end])


def _explain_json(result: Explanation, by_path: dict[str, str]) -> dict[str, Any]:
    threshold = result.threshold
    return {
        "threshold": threshold,
        "entities": [
            {
                "type": f.entity_type,
                "score": round(f.score, 4),
                "path": f.path,
                "start": f.start,
                "end": f.end,
                "recognizer": f.recognizer,
                "text": _masked(f, by_path),
                "counted": f.score >= threshold,
            }
            for f in _sorted_findings(result)
        ],
        "rules": [
            {"id": t.rule_id, "matched": t.matched, "reasons": list(t.reasons)}
            for t in result.trace
        ],
        "decision": _decision_json(result.decision),
    }


def _sorted_findings(result: Explanation) -> list[Finding]:
    return sorted(result.findings, key=lambda f: (f.path, f.start, f.entity_type))


def _print_explain(result: Explanation, by_path: dict[str, str]) -> None:
    d, threshold = result.decision, result.threshold
    print(f"entities found (threshold {threshold:g}):")
    findings = _sorted_findings(result)
    if not findings:
        print("  none")
    for f in findings:
        note = "" if f.score >= threshold else "  (below threshold: ignored)"
        print(
            f"  {f.entity_type:<22} {f.score:.2f}  {f.path}[{f.start}:{f.end}]  "
            f"{_masked(f, by_path)}  via {f.recognizer}{note}"
        )
    print("rules tried:")
    for t in result.trace:
        print(f"  {'MATCH' if t.matched else 'no   '}  {t.rule_id}")
        for reason in t.reasons:
            print(f"           {reason}")
    if not any(t.matched for t in result.trace):
        print("  no rule matched: the default route applies")
    print(f"decision: {d.action} {d.route or ''}".rstrip())
    print(f"  rule {d.rule_id}, policy version {d.policy_version}")
    if d.operations:
        ops = ", ".join(f"{k}: {v}" for k, v in d.operations.items())
        print(f"  sanitize: {ops}")
    if d.fallback_route:
        print(f"  fallback if the managed upstream fails: {d.fallback_route}")
    if d.message:
        print(f"  message to the caller: {d.message}")
    if d.reason:
        print(f"  failed closed: {d.reason}")


# ---- replay -------------------------------------------------------------------------------


def _replay(args: argparse.Namespace) -> int:
    from gateway.audit import AuditConfig, header_digest, open_store
    from gateway.audit._config import audit_config_from_file, audit_digest_key
    from gateway.audit._export import normalize_time
    from gateway.policy import load_policy
    from gateway.policy.replay import HeaderDigest, replay_decisions
    from pki.secret import Secret

    policy = load_policy(args.policy)
    since = normalize_time(args.since, option="--since") if args.since else None
    until = normalize_time(args.until, option="--until") if args.until else None
    if args.config is not None:
        config = audit_config_from_file(args.config)
    elif args.sqlite is not None:
        config = AuditConfig(backend="sqlite", path=args.sqlite)
    else:
        config = AuditConfig(backend="postgres", dsn=Secret(args.dsn))
    if args.digest_key_file is not None:
        config = config.model_copy(update={"digest_key_file": args.digest_key_file})
    digest: HeaderDigest | None = None
    if config.digest_key_file is not None or config.digest_key_env is not None:
        key = audit_digest_key(config)

        def digest(name: str, value: str) -> str:
            return header_digest(key, name, value)

    store = open_store(config, read_only=True)  # replay never writes to the trail it reads
    try:
        with store.snapshot():
            records = (
                (rec.record_id, rec.time, rec.body)
                for rec in store.records(since=since, until=until)
                if rec.kind == "decision"
            )
            report = replay_decisions(records, policy, header_digest=digest)
    finally:
        store.close()
    report.window = (since, until)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.to_text())
        print(
            "note: decisions are re-decided from the trail as stored; `bastion audit verify` "
            "proves it was not altered"
        )
    return 0
