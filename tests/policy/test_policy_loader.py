"""Loading policy files: every mistake is refused with file:line:col, key path and what was
expected; the version hashes canonical content; the detection section becomes a DetectionSpec."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.detect.spec import Validator
from gateway.policy import (
    PolicyFileError,
    RouteKind,
    Severity,
    check_policy_file,
    load_policy,
    load_policy_text,
)
from tests.policy._policies import BASE

REPO = Path(__file__).resolve().parents[2]


def _replace(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


# (policy text, line, col, key path, message fragment)
MISTAKES = [
    (
        _replace("      sanitize:\n        PERSON", "      santize:\n        PERSON"),
        57,
        7,
        "rules[5].then.santize",
        "unknown key 'santize': did you mean 'sanitize'?",
    ),
    (
        _replace("  on_error: onprem", "  on_error: onprem\n  on_eror: deny"),
        6,
        3,
        "defaults.on_eror",
        "unknown key 'on_eror'",
    ),
    (
        _replace("threshold: 0.5", "threshold: 1.5"),
        7,
        14,
        "detection.threshold",
        "expected a number between 0 and 1, got 1.5",
    ),
    (
        _replace("threshold: 0.5", "threshold: yes"),
        7,
        14,
        "detection.threshold",
        "expected a number, got string 'yes'",
    ),
    (
        _replace("version: 1", "version: 2"),
        1,
        10,
        "version",
        "expected 1, got number 2",
    ),
    (
        _replace("    kind: managed", "    kind: cloud"),
        13,
        11,
        "routes.openai.kind",
        "expected one of: onprem, managed; got string 'cloud'",
    ),
    (
        _replace("    upstream: worker\n", ""),
        9,
        3,
        "routes.onprem",
        "missing required key 'upstream'",
    ),
    (
        _replace("name: base\n", ""),
        1,
        1,
        "",
        "missing required key 'name'",
    ),
    (
        _replace("identity: spiffe://corp.test/billing/*", "identity: 42"),
        26,
        17,
        "rules[1].when.identity",
        "expected a glob string or a list of glob strings, got number 42",
    ),
    (
        _replace("any: [AWS_ACCESS_KEY, PASSWORD]", "any: [AWS_ACCESS_KEY, password]"),
        20,
        31,
        "rules[0].when.entities.any[1]",
        "expected an entity type in UPPER_SNAKE_CASE",
    ),
    (
        _replace("        LOCATION: redact", "        LOCATION: shred"),
        59,
        19,
        "rules[5].then.sanitize.LOCATION",
        "expected one of: redact, mask, hash, pseudonymize; got string 'shred'",
    ),
    (
        _replace("  route: openai\n", "  route: openai\n  route: onprem\n"),
        5,
        3,
        "",
        'duplicate key "route"',
    ),
    (
        _replace("any: [AWS_ACCESS_KEY, PASSWORD]", "any: [AWS_ACCESS_KEY, PASSWORD"),
        21,
        9,
        "",
        "YAML error",
    ),
    (
        _replace("  route: openai\n", "  route: nowhere\n"),
        4,
        10,
        "defaults.route",
        "route 'nowhere' is not defined; defined routes: onprem, openai",
    ),
    (
        _replace("  on_error: onprem", "  on_error: openai"),
        5,
        13,
        "defaults.on_error",
        "'openai' is a managed route; expected 'deny' or an on-prem route (onprem)",
    ),
    (
        _replace("    fallback: onprem", "    fallback: openai"),
        15,
        15,
        "routes.openai.fallback",
        "fallback 'openai' is a managed route; expected an on-prem route",
    ),
    (
        _replace("    upstream: worker\n", "    upstream: worker\n    fallback: onprem\n"),
        12,
        15,
        "routes.onprem.fallback",
        "only managed routes fall back",
    ),
    (
        _replace("- id: ssn-deny", "- id: secrets-deny"),
        32,
        9,
        "rules[2].id",
        "duplicate rule id 'secrets-deny' (first used on line 17)",
    ),
    (
        _replace("any: [US_SSN]", "any: [US_SNN]"),
        35,
        15,
        "rules[2].when.entities.any[0]",
        "unknown entity type 'US_SNN'; did you mean 'US_SSN'?",
    ),
    (
        _replace(
            "    then:\n      route: onprem\n  - id: completions",
            "    then:\n      route: onprem\n      sanitize: {PERSON: redact}\n  - id: completions",
        ),
        45,
        7,
        "rules[3].then.sanitize",
        "sanitize applies to managed routes only; route 'onprem' is on-prem",
    ),
    (
        _replace(
            "      deny:\n        message: no secrets",
            "      route: onprem\n      deny:\n        message: no secrets",
        ),
        21,
        5,
        "rules[0].then",
        "'deny' cannot be combined with 'route' or 'sanitize'",
    ),
    (
        _replace(
            "threshold: 0.5\n",
            "threshold: 0.5\n  recognizers:\n    - name: r\n      entity: ZIP\n      patterns:\n        - {regex: '(\\d{5}', score: 0.5}\n",
        ),
        12,
        19,
        "detection.recognizers[0].patterns[0].regex",
        "regular expression does not compile: missing ), unterminated subpattern",
    ),
    (
        _replace("threshold: 0.5\n", "threshold: 0.5\n  entities: [US_SSN, AWS_ACCESS_KEY]\n"),
        21,
        31,
        "rules[0].when.entities.any[1]",
        "'PASSWORD' is not in detection.entities, so it is never found",
    ),
    ("", 1, 1, "", "expected a mapping with the keys version, name, defaults, routes and rules"),
]
MISTAKE_IDS = [
    "misspelled-sanitize",
    "misspelled-on-error",
    "threshold-out-of-range",
    "yes-is-a-string-not-a-bool",
    "unknown-format-version",
    "unknown-route-kind",
    "route-missing-upstream",
    "document-missing-name",
    "identity-not-a-glob",
    "entity-not-upper-case",
    "unknown-operation",
    "duplicate-yaml-key",
    "yaml-syntax-error",
    "default-route-undefined",
    "on-error-managed",
    "fallback-to-managed",
    "fallback-on-onprem-route",
    "duplicate-rule-id",
    "unknown-entity-type",
    "sanitize-on-onprem-route",
    "deny-with-route",
    "regex-does-not-compile",
    "entity-not-detected",
    "empty-file",
]


@pytest.mark.parametrize(("text", "line", "col", "path", "fragment"), MISTAKES, ids=MISTAKE_IDS)
def test_mistake_is_refused_with_position(
    tmp_path: Path, text: str, line: int, col: int, path: str, fragment: str
) -> None:
    """Each mistake refuses the file and names file:line:col, the key path and the expectation."""
    file = tmp_path / "p.yaml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyFileError) as info:
        load_policy(file)
    matching = [i for i in info.value.issues if fragment in i.message]
    assert matching, [str(i) for i in info.value.issues]
    issue = matching[0]
    assert (issue.file, issue.line, issue.col, issue.path) == (str(file), line, col, path)
    assert f"{file}:{line}:{col}: error: " in str(info.value)


def test_every_schema_error_is_reported_at_once(tmp_path: Path) -> None:
    """A file with several mistakes lists all of them, not just the first."""
    text = _replace("kind: managed", "kind: cloud").replace("threshold: 0.5", "threshold: 2")
    file = tmp_path / "p.yaml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyFileError) as info:
        load_policy(file)
    assert [i.path for i in info.value.issues] == ["detection.threshold", "routes.openai.kind"]


def test_missing_file_is_refused(tmp_path: Path) -> None:
    """A path that does not exist is a PolicyFileError naming the file, not an OSError."""
    with pytest.raises(PolicyFileError, match="cannot read the file"):
        load_policy(tmp_path / "absent.yaml")


def test_version_ignores_comments_whitespace_and_key_order() -> None:
    """The version hashes canonical content: formatting changes keep it, content changes don't."""
    base = load_policy_text(BASE).version
    reformatted = "# a comment\n" + BASE.replace(
        "version: 1\nname: base\n", "name: base   # trailing\nversion: 1\n"
    ).replace("threshold: 0.5", "threshold: 0.50").replace(
        "    kind: onprem\n    upstream: worker", "    upstream: worker\n    kind: onprem"
    )
    assert load_policy_text(reformatted).version == base
    assert base.startswith("sha256:")
    assert len(base) == len("sha256:") + 64
    changed = load_policy_text(BASE.replace("threshold: 0.5", "threshold: 0.6")).version
    assert changed != base


def test_loaded_model_is_typed() -> None:
    """Routes, rules and sanitize maps load into typed, read-only values."""
    p = load_policy_text(BASE)
    assert p.routes["openai"].kind is RouteKind.MANAGED
    assert p.routes["openai"].fallback == "onprem"
    rule = p.rule("tenant-onprem")
    assert rule is not None
    assert rule.when.header == {"x-tenant": ("acme", "globex-*")}
    email = p.rule("email-managed-default")
    assert email is not None
    assert email.then.sanitize_default == "hash"
    with pytest.raises(TypeError):
        p.routes["x"] = p.routes["openai"]  # type: ignore[index]


def test_detection_section_becomes_spec() -> None:
    """Custom recognizers and deny-lists become a DetectionSpec; their types join the entities."""
    text = _replace(
        "threshold: 0.5\n",
        "threshold: 0.4\n"
        "  entities: [US_SSN, AWS_ACCESS_KEY, PASSWORD, PERSON, LOCATION, EMAIL_ADDRESS]\n"
        "  recognizers:\n"
        "    - name: mrn\n"
        "      entity: MRN_LOCAL\n"
        "      patterns:\n"
        "        - {regex: 'MRN\\d{8}', score: 0.6}\n"
        "      context: [chart]\n"
        "      validator: luhn\n"
        "  deny_lists:\n"
        "    - {name: codes, entity: CODENAME, terms: [bluebird]}\n",
    )
    spec = load_policy_text(text).detection
    assert spec.threshold == 0.4
    assert spec.entities is not None
    assert spec.entities[-2:] == ("MRN_LOCAL", "CODENAME")
    (rec,) = spec.recognizers
    assert (rec.name, rec.entity_type, rec.context, rec.validator) == (
        "mrn",
        "MRN_LOCAL",
        ("chart",),
        Validator.LUHN,
    )
    assert rec.patterns[0].name == "mrn_0"
    assert rec.patterns[0].score == 0.6
    assert spec.deny_lists[0].terms == ("bluebird",)


def test_warnings_do_not_refuse(tmp_path: Path) -> None:
    """A policy with only warnings loads; check_policy_file still reports them."""
    text = _replace("        min_score: 0.8", "        min_score: 0.3")
    file = tmp_path / "p.yaml"
    file.write_text(text, encoding="utf-8")
    policy, issues = check_policy_file(file)
    assert policy is not None
    assert [(i.severity, i.path) for i in issues] == [
        (Severity.WARNING, "rules[1].when.entities.min_score")
    ]


def test_shipped_schema_copy_matches_package() -> None:
    """policies/schema.json (for editors) is byte-identical to the schema the loader uses."""
    shipped = (REPO / "policies" / "schema.json").read_bytes()
    package = (REPO / "gateway" / "policy" / "schema.json").read_bytes()
    assert shipped == package
