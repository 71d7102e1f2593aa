"""``bastion audit`` export, tail, checkpoint, pubkey and prune on a real SQLite trail."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from gateway.audit import AuditConfig, OutcomeRecord, open_audit_trail
from gateway.audit._checkpoint import key_fingerprint
from gateway.cli import main
from pki.signing import FileSigner
from tests.audit.helpers import assert_trail_verifies, sample_decision


def _write(db: Path, signer: FileSigner, count: int) -> list[str]:
    async def run() -> list[str]:
        trail = open_audit_trail(AuditConfig(path=db, checkpoint_interval_s=3600), signer)
        ids = []
        for i in range(count):
            decision_id = await trail.append_decision(sample_decision(i, model="=cmd|calc"))
            ids.append(decision_id)
            ids.append(await trail.append_outcome(OutcomeRecord(decision_id, 200, 3.5, "w1", 9, 4)))
        await trail.close()
        return ids

    return asyncio.run(run())


def _times(db: Path) -> list[str]:
    with closing(sqlite3.connect(db)) as conn:
        return [r[0] for r in conn.execute("SELECT time FROM audit_records ORDER BY seq")]


@pytest.fixture
def trail_db(tmp_path: Path, signer: FileSigner) -> Path:
    db = tmp_path / "trail.db"
    _write(db, signer, 5)
    return db


@pytest.mark.parametrize("fmt", ["jsonl", "csv"], ids=["jsonl", "csv"])
def test_export_time_range(trail_db: Path, fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    """export --since/--until returns exactly the records in [since, until), in order."""
    times = _times(trail_db)
    since, until = times[2], times[6]
    expected = [i + 1 for i, t in enumerate(times) if since <= t < until]
    argv = ["audit", "export", "--sqlite", str(trail_db), "--format", fmt]
    assert main([*argv, "--since", since, "--until", until]) == 0
    out = capsys.readouterr().out
    if fmt == "jsonl":
        rows = [json.loads(line) for line in out.splitlines()]
        assert [r["seq"] for r in rows] == expected
        assert rows[0]["data"]["entities"] == {"PERSON": 2, "US_SSN": 1}
    else:
        rows = list(csv.DictReader(io.StringIO(out)))
        assert [int(r["seq"]) for r in rows] == expected
        decision = next(r for r in rows if r["kind"] == "decision")
        assert decision["model"] == "'=cmd|calc"  # no spreadsheet formula injection


def test_export_rejects_bad_date(trail_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed --since is a user error naming the option and an example."""
    assert main(["audit", "export", "--sqlite", str(trail_db), "--since", "yesterday"]) == 1
    assert "--since 'yesterday' is not a date" in capsys.readouterr().err


def test_tail_is_human_readable(trail_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """tail -n shows the last records, decisions and outcomes, one line each, without digests."""
    assert main(["audit", "tail", "--sqlite", str(trail_db), "-n", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert "decision" in lines[0]
    assert "action=onprem" in lines[0]
    assert "outcome" in lines[1]
    assert "status=200" in lines[1]
    assert "hmac-sha256" not in "".join(lines)


def test_checkpoint_saved_then_pinned(
    trail_db: Path, tmp_path: Path, signer: FileSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    """checkpoint --output saves the latest note; verify --checkpoint accepts the same trail
    after more records were appended."""
    saved = tmp_path / "cp.txt"
    assert main(["audit", "checkpoint", "--sqlite", str(trail_db), "--output", str(saved)]) == 0
    assert capsys.readouterr().out == saved.read_text()
    _write(trail_db, signer, 2)
    pub = tmp_path / "pub.pem"
    assert main(["audit", "pubkey", "--signing-key", str(tmp_path / "keys" / "audit.pem")]) == 0
    pub.write_text(capsys.readouterr().out)
    argv = ["audit", "verify", "--sqlite", str(trail_db), "--pubkey", str(pub)]
    assert main([*argv, "--checkpoint", str(saved)]) == 0, capsys.readouterr().out


def test_pubkey_from_store_matches_signing_key(
    trail_db: Path, signer: FileSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    """pubkey prints the key the gateway registered (the signing key's PEM), labelled as the
    store's unverified copy and with its fingerprint."""
    assert main(["audit", "pubkey", "--sqlite", str(trail_db)]) == 0
    out = capsys.readouterr().out
    assert out.endswith(signer.public_key_pem().decode())
    assert "unverified" in out
    assert f"# fingerprint {key_fingerprint(signer.public_key_pem())}\n" in out


def test_prune_keeps_the_rest_verifiable(
    trail_db: Path, tmp_path: Path, signer: FileSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    """prune --before removes the older records, signs an anchor, records itself, and the
    remainder verifies from the anchor."""
    times = _times(trail_db)
    key = str(tmp_path / "keys" / "audit.pem")
    argv = ["audit", "prune", "--sqlite", str(trail_db), "--signing-key", key]
    assert main([*argv, "--before", times[4]]) == 0
    assert "pruned 4 records" in capsys.readouterr().out
    with closing(sqlite3.connect(trail_db)) as conn:
        seqs = [r[0] for r in conn.execute("SELECT seq FROM audit_records ORDER BY seq")]
        kinds = [r[0] for r in conn.execute("SELECT kind FROM audit_records ORDER BY seq")]
    assert seqs == list(range(5, 12))
    assert kinds[-1] == "prune"
    report = assert_trail_verifies(trail_db, public_keys=[signer.public_key_pem()])
    assert report.first_seq == 5


def test_prune_refuses_a_tampered_trail(
    trail_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """prune never signs an anchor over a trail that does not verify."""
    with closing(sqlite3.connect(trail_db)) as conn:
        conn.execute("UPDATE audit_records SET body = body || ' ' WHERE seq = 2")
        conn.commit()
    key = str(tmp_path / "keys" / "audit.pem")
    argv = ["audit", "prune", "--sqlite", str(trail_db), "--signing-key", key]
    assert main([*argv, "--before", "2999-01-01"]) == 1
    assert "refusing to prune" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("yaml_text", "code", "message"),
    [
        ("audit:\n  path: trail.db\nsigning:\n  key_file: keys/audit.pem\n", 0, "OK"),
        ("audit:\n  path: trail.db\n", 1, "names no checkpoint signer"),
        ("audit:\n  path: trail.db\n  sanitize: x\n", 1, "audit.sanitize: Extra inputs"),
        ("gateway: {}\n", 1, "has no 'audit:' section"),
        ("audit: [\n", 1, "bastion.yaml:2:1: YAML error"),
    ],
    ids=["good", "no-signer", "unknown-key", "no-section", "bad-yaml"],
)
def test_config_file_selects_the_store(
    trail_db: Path,
    yaml_text: str,
    code: int,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--config reads the audit: section (paths relative to the file); mistakes are named."""
    config = trail_db.parent / "bastion.yaml"
    config.write_text(yaml_text)
    assert main(["audit", "verify", "--config", str(config)]) == code
    captured = capsys.readouterr()
    assert message in captured.out + captured.err
