"""A managed route's ``binary:`` option (issue 13): image, audio and file parts cannot be
scanned, so a managed route refuses them unless the policy says ``binary: allow``; the default
is refuse, a bad value is an error, and lint warns wherever binary content is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.policy import PolicyFileError, load_policy
from tests.policy._policies import BASE

MANAGED = "    upstream: openai\n    fallback: onprem\n"
ROWS = [
    ("default-refuses", "", False),
    ("refuse", "    binary: refuse\n", False),
    ("allow", "    binary: allow\n", True),
]


def _write(tmp_path: Path, text: str) -> Path:
    file = tmp_path / "p.yaml"
    file.write_text(text, encoding="utf-8")
    return file


@pytest.mark.parametrize(("line", "allowed"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_binary_option_is_loaded_and_defaults_to_refuse(
    tmp_path: Path, line: str, allowed: bool
) -> None:
    policy = load_policy(_write(tmp_path, BASE.replace(MANAGED, MANAGED + line, 1)))
    assert policy.routes["openai"].allow_binary is allowed
    assert policy.routes["onprem"].allow_binary is False


def test_a_bad_binary_value_is_an_error(tmp_path: Path) -> None:
    text = BASE.replace(MANAGED, MANAGED + "    binary: yes-please\n", 1)
    with pytest.raises(PolicyFileError) as caught:
        load_policy(_write(tmp_path, text))
    assert "routes.openai.binary" in str(caught.value)


@pytest.mark.parametrize(
    ("route", "extra", "expected"),
    [
        ("openai", MANAGED, "warning: routes.openai.binary: route 'openai' sends image, audio"),
        ("onprem", "    upstream: worker\n", "warning: routes.onprem.binary: binary: applies"),
    ],
    ids=["managed-allow", "onprem-meaningless"],
)
def test_lint_warns_when_binary_is_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], route: str, extra: str, expected: str
) -> None:
    file = _write(tmp_path, BASE.replace(extra, extra + "    binary: allow\n", 1))
    assert main(["policy", "lint", str(file)]) == 0
    assert expected in capsys.readouterr().out
