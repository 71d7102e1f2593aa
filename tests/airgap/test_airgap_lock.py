"""The requirements lock and the ``bastion bundle`` CLI's refusals (fast: nothing downloaded)."""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from gateway.bundle import LockError, parse_lock
from gateway.bundle._lock import normalize_name
from gateway.cli import main
from pki.signing import FileSigner

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "deploy" / "airgap" / "requirements.lock"
HASH = "a" * 64


def _project_names(key: str | None) -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] if key is None else project["optional-dependencies"][key]
    return [normalize_name(re.split(r"[=<>!~\[; ]", r, maxsplit=1)[0]) for r in requirements]


def test_lock_pins_every_dependency_at_the_tested_version() -> None:
    """Every runtime and worker dependency of pyproject.toml is in the lock, in its group, at the
    version installed in this venv: a stale lock (run `make lock`) fails here."""
    entries = {e.key: e for e in parse_lock(LOCK.read_text())}
    for name in _project_names(None):
        assert name in entries, f"{name} is not in the lock; run `make lock`"
        assert entries[name].group == "core"
    for name in _project_names("worker"):
        assert entries[name].group == "worker", name
    assert entries["pip"].group == "bootstrap"
    for entry in entries.values():
        if entry.group in ("core", "worker"):
            assert version(entry.name) == entry.version, f"{entry.name}: run `make lock`"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("starlette==1.0\n", "expected 'name==version --hash=sha256:HEX  # group'"),
        (f"starlette==1.0 --hash=sha256:{HASH}  # extra\n", "unknown group 'extra'"),
        (
            f"starlette==1.0 --hash=sha256:{HASH}  # core\nStarlette==1.0 --hash=sha256:{HASH}  # core\n",
            "listed twice",
        ),
        ("# only comments\n", "no requirements"),
    ],
    ids=["no-hash", "unknown-group", "duplicate", "empty"],
)
def test_parse_lock_refuses_malformed_lines(text: str, words: str) -> None:
    """A lock line without a hash or group, a duplicate, or an empty lock is refused by line."""
    with pytest.raises(LockError, match=words):
        parse_lock(text, source="x.lock")


def test_build_refuses_a_non_empty_output_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bastion bundle build` never builds over an existing bundle, and says so before fetching."""
    FileSigner.generate(tmp_path / "key.pem", key_id="k")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old").write_text("x")
    code = main(
        [
            *("bundle", "build", "--out", str(out), "--signing-key", str(tmp_path / "key.pem")),
            *("--without-worker", "--cache", str(tmp_path / "cache")),
        ]
    )
    assert code == 1
    assert "already exists and is not an empty directory" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()
