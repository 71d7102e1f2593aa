"""``bastion policy lint``: every finding as file:line:col, unreachable rules, exit status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.policy._checks import subsumes
from gateway.policy.model import EntityCondition, When
from tests.policy._policies import BASE

REPO = Path(__file__).resolve().parents[2]


def _lint(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    file = tmp_path / "p.yaml"
    file.write_text(text, encoding="utf-8")
    code = main(["policy", "lint", str(file)])
    return code, capsys.readouterr().out.replace(str(file), "p.yaml")


CATCH_ALL = "  - id: everything-onprem\n    then:\n      route: onprem\n"
UNREACHABLE = [
    (
        BASE.replace("rules:\n", "rules:\n" + CATCH_ALL, 1),
        "p.yaml:20:9: error: rules[1].id: rule 'secrets-deny' is unreachable: earlier rule "
        "'everything-onprem' matches every request (first match wins); reorder or remove it",
    ),
    (
        BASE + "  - id: email-again\n    when:\n      entities:\n        any: [EMAIL_ADDRESS]\n"
        "    then:\n      route: onprem\n",
        "p.yaml:68:9: error: rules[7].id: rule 'email-again' is unreachable: earlier rule "
        "'email-managed-default' matches every request this rule matches",
    ),
    (
        BASE + "  - id: key-for-billing\n    when:\n      identity: spiffe://corp.test/billing/x\n"
        "      entities:\n        all: [AWS_ACCESS_KEY, US_SSN]\n    then:\n      route: onprem\n",
        "rule 'key-for-billing' is unreachable: earlier rule 'secrets-deny' matches every "
        "request this rule matches",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), UNREACHABLE, ids=["after-catch-all", "identical-when", "narrower-when"]
)
def test_unreachable_rules_are_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    """A rule that an earlier rule always beats is reported with its position; lint exits 1."""
    code, out = _lint(tmp_path, text, capsys)
    assert code == 1
    assert expected in out


def test_lint_prints_all_findings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Lint prints every error and warning in the file, each as file:line:col, and a summary."""
    text = (
        BASE.replace("any: [US_SSN]", "any: [US_SNN]")
        .replace(
            "      route: onprem\n  - id: completions", "      route: cloud\n  - id: completions"
        )
        .replace("        min_score: 0.8", "        min_score: 0.1")
        .replace("- id: ssn-deny", "- id: secrets-deny")
        + "  - id: names-managed\n    when:\n      model: x\n    then:\n      route: onprem\n"
    )
    code, out = _lint(tmp_path, text, capsys)
    assert code == 1
    lines = out.splitlines()
    assert lines == [
        "p.yaml:29:20: warning: rules[1].when.entities.min_score: min_score 0.1 is below "
        "detection.threshold 0.5 and has no effect (findings below the threshold are always "
        "ignored)",
        "p.yaml:32:9: error: rules[2].id: duplicate rule id 'secrets-deny' (first used on line 17)",
        "p.yaml:35:15: error: rules[2].when.entities.any[0]: unknown entity type 'US_SNN'; "
        "did you mean 'US_SSN'? expected a type detection knows or one a custom recognizer or "
        "deny-list defines",
        "p.yaml:44:14: error: rules[3].then.route: route 'cloud' is not defined; defined routes: "
        "onprem, openai",
        "p.yaml:68:9: error: rules[7].id: duplicate rule id 'names-managed' (first used on line 51)",
        "4 error(s), 1 warning(s) in 1 file(s)",
    ]


def test_unused_route_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A route nothing refers to is a warning: lint shows it and still exits 0."""
    text = BASE.replace("routes:\n", "routes:\n  spare:\n    kind: onprem\n    upstream: w2\n", 1)
    code, out = _lint(tmp_path, text, capsys)
    assert code == 0
    assert "p.yaml:9:3: warning: routes.spare: route 'spare' is never used" in out
    assert "p.yaml: ok, policy 'base' version sha256:" in out


def test_shipped_policies_lint_clean(capsys: pytest.CaptureFixture[str]) -> None:
    """Every example policy in policies/ lints with no error and no warning."""
    files = sorted(str(p) for p in (REPO / "policies").glob("*.yaml"))
    assert len(files) == 4
    assert main(["policy", "lint", *files]) == 0
    assert capsys.readouterr().out.endswith("0 error(s), 0 warning(s) in 4 file(s)\n")


def _w(
    *,
    entities: dict[str, Any] | None = None,
    identity: tuple[str, ...] | None = None,
    model: tuple[str, ...] | None = None,
    header: dict[str, tuple[str, ...]] | None = None,
) -> When:
    return When(
        entities=None if entities is None else EntityCondition(**entities),
        identity=identity,
        model=model,
        header=header,
    )


SUBSUMES = [
    (_w(), _w(model=("x",)), True),
    (_w(model=("**",)), _w(model=("gpt-*",)), True),
    (_w(model=("gpt-*",)), _w(model=("gpt-4",)), False),
    (_w(model=("a", "b")), _w(model=("b",)), True),
    (_w(identity=("spiffe://x/**",)), _w(), False),
    (_w(entities={"any": frozenset({"A", "B"})}), _w(entities={"any": frozenset({"A"})}), True),
    (_w(entities={"any": frozenset({"A"})}), _w(entities={"any": frozenset({"A", "B"})}), False),
    (_w(entities={"any": frozenset({"*"})}), _w(entities={"all": frozenset({"B"})}), True),
    (_w(entities={"any": frozenset({"A"})}), _w(entities={"all": frozenset({"A", "B"})}), True),
    (_w(entities={"all": frozenset({"A", "B"})}), _w(entities={"all": frozenset({"A"})}), False),
    (
        _w(entities={"any": frozenset({"A"}), "min_score": 0.9}),
        _w(entities={"any": frozenset({"A"})}),
        False,
    ),
    (_w(entities={"any": frozenset({"A"})}), _w(), False),
    (_w(header={"x": ("**",)}), _w(), False),
    (_w(header={"x": ("a",)}), _w(header={"x": ("a",)}, model=("m",)), True),
]


@pytest.mark.parametrize(
    ("earlier", "later", "expected"),
    SUBSUMES,
    ids=[
        "catch-all",
        "double-star-glob",
        "different-globs-unsure",
        "glob-superset",
        "identity-vs-unconditioned",
        "any-superset",
        "any-subset",
        "star-covers-all",
        "any-hit-by-later-all",
        "all-superset-is-stricter",
        "higher-min-score-is-stricter",
        "entities-vs-unconditioned",
        "header-needs-presence",
        "same-header-plus-more",
    ],
)
def test_subsumption(earlier: When, later: When, expected: bool) -> None:
    """An earlier rule shadows a later one only when it provably matches all the later matches."""
    assert subsumes(earlier, later) is expected
