"""Pinned-signer verification and policy replay on a real PostgreSQL trail: the forger's re-sign
is refused without --trust-stored-keys, an edited checkpoint column is named, and replay reads
through a read-only session that refuses writes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import psycopg
import pytest

from gateway.audit import (
    AuditConfig,
    AuditUnavailable,
    DecisionInputs,
    open_audit_trail,
    open_store,
    verifier_key,
)
from gateway.audit._chain import Entry, link
from gateway.audit._checkpoint import sign_checkpoint
from gateway.cli import main
from pki.secret import Secret
from pki.signing import FileSigner
from tests.audit.helpers import sample_decision

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_trail(postgres_dsn: str, tmp_path: Path) -> tuple[str, Path]:
    """12 decisions (with inputs) and checkpoints at 4, 8 and 12 (close); the signer's key."""
    signer = FileSigner.generate(tmp_path / "audit.pem", key_id="audit")
    config = AuditConfig(backend="postgres", dsn=postgres_dsn, checkpoint_interval_s=3600)

    async def write() -> None:
        trail = open_audit_trail(config, signer)
        for i in range(1, 13):
            inputs = DecisionInputs(entities={"US_SSN": (1, 0.85)}, headers={}, threshold=0.5)
            await trail.append_decision(sample_decision(i, inputs=inputs))
            if i in (4, 8):
                await trail.checkpoint()
        await trail.close()

    asyncio.run(write())
    pub = tmp_path / "audit.pub"
    pub.write_bytes(signer.public_key_pem())
    return postgres_dsn, pub


def _forge(dsn: str, tmp_path: Path) -> None:
    """Edit record 6, re-chain, replace the key table with the forger's key and re-sign."""
    forger = FileSigner.generate(tmp_path / "forger.pem", key_id="x")
    with psycopg.connect(dsn) as conn:
        (body,) = conn.execute("SELECT body FROM audit_records WHERE seq = 6").fetchone()
        body = bytes(body).replace(b'"rule_id":"pii-onprem"', b'"rule_id":"allow-all"')
        conn.execute("UPDATE audit_records SET body = %s WHERE seq = 6", (body,))
        (prev,) = conn.execute("SELECT hash FROM audit_records WHERE seq = 5").fetchone()
        prev = bytes(prev)
        for seq, body in conn.execute(
            "SELECT seq, body FROM audit_records WHERE seq >= 6 ORDER BY seq"
        ).fetchall():
            prev = link(prev, bytes(body))
            conn.execute("UPDATE audit_records SET hash = %s WHERE seq = %s", (prev, seq))
        conn.execute("UPDATE audit_head SET hash = %s WHERE id = 1", (prev,))
        for cid, size, time in conn.execute(
            "SELECT id, size, time FROM audit_checkpoints"
        ).fetchall():
            (head,) = conn.execute(
                "SELECT hash FROM audit_records WHERE seq = %s", (size,)
            ).fetchone()
            note = sign_checkpoint(
                forger,
                origin="bastion.local/audit",
                size=size,
                head=bytes(head),
                time=time,
                reason="x",
            )
            conn.execute("UPDATE audit_checkpoints SET note = %s WHERE id = %s", (note, cid))
        key = verifier_key("bastion.local/audit", forger.public_key_pem())
        conn.execute("DELETE FROM audit_keys")
        conn.execute(
            "INSERT INTO audit_keys VALUES (%s, %s, %s, %s, 't')",
            (key.key_hash, key.name, key.algorithm, key.public_key_pem),
        )


@pytest.mark.parametrize(
    ("flags", "code", "stream", "expected"),
    [
        ([], 1, "err", "needs the signer's public key"),
        (["--pubkey"], 1, "out", "signed by an unknown key"),
        (["--trust-stored-keys"], 0, "out", "NOT PROVEN: who signed"),
    ],
    ids=["no-key-refused", "pinned-key-catches", "trust-stored-says-what-it-misses"],
)
def test_forged_resign_on_postgres(
    pg_trail: tuple[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    code: int,
    stream: str,
    expected: str,
) -> None:
    """The issue's forgery on PostgreSQL: only a pinned key catches it, and trusting the stored
    keys says so."""
    dsn, pub = pg_trail
    _forge(dsn, tmp_path)
    argv = ["audit", "verify", "--dsn", dsn]
    argv += ["--pubkey", str(pub)] if flags == ["--pubkey"] else flags
    assert main(argv) == code
    assert expected in getattr(capsys.readouterr(), stream)


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        ("UPDATE audit_checkpoints SET size = 99 WHERE size = 8", "size column says 99"),
        (
            "UPDATE audit_checkpoints SET time = '1999-01-01T00:00:00.000000Z' WHERE size = 4",
            "time column says 1999-01-01",
        ),
        ("UPDATE audit_head SET time = '1999-01-01T00:00:00.000000Z'", "head row holds a time"),
    ],
    ids=["checkpoint-size", "checkpoint-time", "head-time"],
)
def test_unsigned_copies_are_checked_on_postgres(
    pg_trail: tuple[str, Path],
    capsys: pytest.CaptureFixture[str],
    statement: str,
    expected: str,
) -> None:
    """An edit of a column that copies a signed value is named, though no record changed."""
    dsn, pub = pg_trail
    assert main(["audit", "verify", "--dsn", dsn, "--pubkey", str(pub)]) == 0
    capsys.readouterr()
    with psycopg.connect(dsn) as conn:
        conn.execute(statement)
    assert main(["audit", "verify", "--dsn", dsn, "--pubkey", str(pub)]) == 1
    assert expected in capsys.readouterr().out


def test_replay_on_postgres_reads_read_only(
    pg_trail: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """replay --dsn re-decides the PostgreSQL trail; the session it reads through is read-only
    (a write through it fails), and the trail is unchanged afterwards."""
    dsn, _ = pg_trail
    with psycopg.connect(dsn) as conn:
        before = conn.execute("SELECT count(*), max(seq) FROM audit_records").fetchone()
    policy = tmp_path / "p.yaml"
    policy.write_text(
        (Path(__file__).resolve().parents[2] / "policies" / "default.yaml").read_text()
    )
    assert main(["policy", "replay", "--dsn", dsn, "--policy", str(policy), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["decisions"] == 12
    # sample_decision's rule "pii-onprem" is no rule of the default policy: every one changes.
    assert report["changed"] == 12
    assert report["changes"][0]["old_rule"] == "pii-onprem"
    assert report["changes"][0]["new_rule"] == "structured-ids-onprem"
    store = open_store(AuditConfig(backend="postgres", dsn=Secret(dsn)), read_only=True)
    try:
        with pytest.raises(AuditUnavailable, match="read-only"):
            store.append([Entry("dec_" + "0" * 24, "decision", b"{}")])
    finally:
        store.close()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*), max(seq) FROM audit_records").fetchone() == before
