"""``bastion policy test`` and ``explain``: pass/fail per case, coverage, masked explanations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.cli.policy import mask_text
from tests.policy._policies import BASE

SSN = "018-65-2115"
TESTS = f"""\
defaults:
  identity: spiffe://corp.test/support/bot
cases:
  - name: clean
    text: Write a haiku about autumn.
    expect: {{action: managed, route: openai, rule: default}}
  - name: wrong on purpose
    text: My SSN is {SSN}.
    expect: {{action: onprem, rule: billing-ssn-onprem}}
"""


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    policy = tmp_path / "p.yaml"
    policy.write_text(BASE, encoding="utf-8")
    tests = tmp_path / "p.tests.yaml"
    tests.write_text(TESTS, encoding="utf-8")
    return policy, tests


def test_failing_case_exits_1_with_its_line(
    files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A case whose decision differs fails with its file:line, expected vs got; exit status 1."""
    policy, tests = files
    assert main(["policy", "test", str(policy), str(tests)]) == 1
    out = capsys.readouterr().out
    assert "PASS  clean: managed openai (rule default)" in out
    assert (
        f"FAIL  {tests}:7: wrong on purpose: expected action 'onprem', got 'deny'; "
        "expected rule 'billing-ssn-onprem', got 'ssn-deny'"
    ) in out
    assert "got deny - (rule ssn-deny); found US_SSN" in out
    assert "rule coverage: 2/8" in out
    assert "1 passed, 1 failed" in out
    assert SSN not in out


def test_json_output(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one machine-readable report with per-case results and uncovered rules."""
    policy, tests = files
    tests.write_text(TESTS.replace("action: onprem, rule: billing-ssn-onprem", "action: deny"))
    assert main(["policy", "test", str(policy), str(tests), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is True
    assert [c["decision"]["rule"] for c in report["cases"]] == ["default", "ssn-deny"]
    assert report["cases"][1]["entities"] == ["US_SSN"]
    assert "secrets-deny" in report["uncovered_rules"]


def test_require_coverage(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """--require-coverage fails a passing run when some rule is reached by no case."""
    policy, tests = files
    tests.write_text(TESTS.replace("action: onprem, rule: billing-ssn-onprem", "action: deny"))
    assert main(["policy", "test", str(policy), str(tests)]) == 0
    assert main(["policy", "test", str(policy), str(tests), "--require-coverage"]) == 1
    assert "no case reaches: secrets-deny" in capsys.readouterr().out


BAD_TESTS = [
    ("cases:\n  - name: x\n    expect: {action: onprem}\n", "2:5", "give exactly one of"),
    (
        "cases:\n  - name: x\n    text: hi\n    expect: {acton: onprem}\n",
        "4:14",
        "unknown key 'acton': did you mean 'action'?",
    ),
    ("cases: []\n", "1:1", "must not be empty"),
]


@pytest.mark.parametrize(
    ("text", "where", "fragment"), BAD_TESTS, ids=["no-request", "misspelled-expect", "no-cases"]
)
def test_bad_test_file_is_refused(
    files: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    text: str,
    where: str,
    fragment: str,
) -> None:
    """A malformed test file is an error naming file:line:col, before any detection runs."""
    policy, tests = files
    tests.write_text(text, encoding="utf-8")
    assert main(["policy", "test", str(policy), str(tests)]) == 1
    err = capsys.readouterr().err
    assert f"{tests}:{where}: error: " in err
    assert fragment in err


def test_explain_masks_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """explain shows types, scores, paths and offsets, the rules tried and the decision, but
    only the first and last character of each value found."""
    policy = tmp_path / "p.yaml"
    policy.write_text(BASE, encoding="utf-8")
    request = tmp_path / "req.json"
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You help billing."},
            {"role": "user", "content": f"Customer SSN {SSN}, please check."},
        ],
    }
    request.write_text(json.dumps(body), encoding="utf-8")
    args = ["policy", "explain", str(policy), "--request", str(request)]
    args += ["--identity", "spiffe://corp.test/billing/api"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert SSN not in out
    assert "US_SSN" in out
    assert "messages[1].content[13:24]" in out
    assert "0***…***5" in out
    assert "MATCH  billing-ssn-onprem" in out
    assert "decision: onprem onprem" in out
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["decision"]["rule"] == "billing-ssn-onprem"
    assert [(e["type"], e["text"]) for e in result["entities"]] == [("US_SSN", "0***…***5")]
    assert [r["matched"] for r in result["rules"]] == [False, True]


def test_explain_bad_request_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A request file that is not JSON is an error at its line and column."""
    policy = tmp_path / "p.yaml"
    policy.write_text(BASE, encoding="utf-8")
    request = tmp_path / "req.json"
    request.write_text('{"messages": [\n  {"role": "user",}\n]}', encoding="utf-8")
    args = ["policy", "explain", str(policy), "--request", str(request), "--identity", "x"]
    assert main(args) == 1
    assert f"{request}:2:19: error: not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "masked"),
    [("4111111111111111", "4***…***1"), ("abcde", "a***…***e"), ("abcd", "****"), ("", "****")],
    ids=["card", "five-chars", "four-chars", "empty"],
)
def test_mask_text(value: str, masked: str) -> None:
    """Masking keeps at most the first and last character, and nothing of short values."""
    assert mask_text(value) == masked
