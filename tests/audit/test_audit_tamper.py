"""``bastion audit verify`` against a real SQLite trail tampered with in every way the issue
lists: each case must fail and name the right record (or checkpoint)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sqlite3
import uuid
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.audit import AuditConfig, open_audit_trail, open_store, verify_store
from gateway.audit._chain import link
from gateway.audit._checkpoint import parse_checkpoint, sign_checkpoint, verifier_key
from gateway.audit._records import envelope
from gateway.cli import main
from pki.signing import FileSigner
from tests.audit.helpers import sample_decision


@dataclass(frozen=True)
class Built:
    db: Path  # 20 records; checkpoints at 5, 10, 15 and (close) 20
    at10: Path  # a copy taken when the trail held 10 records
    pubkey: Path
    pinned: Path  # the checkpoint at size 20, saved by an "auditor"
    key: Path


def _copy(src: Path, dst: Path) -> None:
    """A consistent copy of a live SQLite file (its WAL included)."""
    with closing(sqlite3.connect(src)) as a, closing(sqlite3.connect(dst)) as b:
        a.backup(b)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    base = tmp_path_factory.mktemp("tamper")
    signer = FileSigner.generate(base / "audit.pem", key_id="audit")
    db = base / "trail.db"

    async def write() -> None:
        trail = open_audit_trail(AuditConfig(path=db, checkpoint_interval_s=3600), signer)
        for i in range(1, 21):
            await trail.append_decision(sample_decision(i))
            if i in (5, 10, 15):
                await trail.checkpoint()
            if i == 10:
                _copy(db, base / "at10.db")
        await trail.close()

    asyncio.run(write())
    (base / "pub.pem").write_bytes(signer.public_key_pem())
    with closing(sqlite3.connect(db)) as conn:
        (note,) = conn.execute("SELECT note FROM audit_checkpoints WHERE size = 20").fetchone()
    (base / "pinned.txt").write_text(note, encoding="utf-8")
    return Built(db, base / "at10.db", base / "pub.pem", base / "pinned.txt", base / "audit.pem")


# -- tampering, as someone with write access to the database file would do it -----------------


def _body(conn: sqlite3.Connection, seq: int) -> bytes:
    return bytes(conn.execute("SELECT body FROM audit_records WHERE seq = ?", (seq,)).fetchone()[0])


def _rechain(conn: sqlite3.Connection, start: int) -> None:
    (prev,) = conn.execute("SELECT hash FROM audit_records WHERE seq = ?", (start - 1,)).fetchone()
    for seq, body in conn.execute(
        "SELECT seq, body FROM audit_records WHERE seq >= ? ORDER BY seq", (start,)
    ).fetchall():
        prev = link(prev, body)
        conn.execute("UPDATE audit_records SET hash = ? WHERE seq = ?", (prev, seq))
    conn.execute(
        "UPDATE audit_head SET seq = (SELECT max(seq) FROM audit_records), hash = ? WHERE id = 1",
        (prev,),
    )


def change_field(conn: sqlite3.Connection, b: Built) -> None:
    body = _body(conn, 5).replace(b'"action":"onprem"', b'"action":"managed"')
    conn.execute("UPDATE audit_records SET body = ? WHERE seq = 5", (body,))


def delete_record(conn: sqlite3.Connection, b: Built) -> None:
    conn.execute("DELETE FROM audit_records WHERE seq = 8")


def swap_records(conn: sqlite3.Connection, b: Built) -> None:
    rows = conn.execute(
        "SELECT seq, id, kind, time, body, hash FROM audit_records WHERE seq IN (12, 13)"
    ).fetchall()
    conn.execute("DELETE FROM audit_records WHERE seq IN (12, 13)")
    for (seq, *_), (_, *rest) in zip(rows, reversed(rows), strict=True):
        conn.execute("INSERT INTO audit_records VALUES (?, ?, ?, ?, ?, ?)", (seq, *rest))


def insert_record(conn: sqlite3.Connection, b: Built) -> None:
    conn.execute("UPDATE audit_records SET seq = -(seq + 1) WHERE seq > 5")
    conn.execute("UPDATE audit_records SET seq = -seq WHERE seq < 0")
    (prev, time) = conn.execute("SELECT hash, time FROM audit_records WHERE seq = 5").fetchone()
    data = b'{"forged":true}'
    body = envelope(data, record_id="dec_" + "0" * 24, kind="decision", seq=6, time=time)
    conn.execute(
        "INSERT INTO audit_records VALUES (6, ?, 'decision', ?, ?, ?)",
        ("dec_" + "0" * 24, time, body, link(prev, body)),
    )


def append_after_the_fact(conn: sqlite3.Connection, b: Built) -> None:
    (prev, time) = conn.execute("SELECT hash, time FROM audit_records WHERE seq = 20").fetchone()
    body = envelope(
        b'{"forged":true}', record_id="dec_" + "f" * 24, kind="decision", seq=21, time=time
    )
    conn.execute(
        "INSERT INTO audit_records VALUES (21, ?, 'decision', ?, ?, ?)",
        ("dec_" + "f" * 24, time, body, link(prev, body)),
    )
    conn.execute("UPDATE audit_head SET seq = 21, hash = ? WHERE id = 1", (link(prev, body),))


def corrupt_signature(conn: sqlite3.Connection, b: Built) -> None:
    (cid, note) = conn.execute("SELECT id, note FROM audit_checkpoints WHERE size = 20").fetchone()
    text, _, sig_line = note.rstrip("\n").rpartition("\n")
    prefix, _, blob = sig_line.rpartition(" ")
    raw = bytearray(base64.b64decode(blob))
    raw[10] ^= 0x01
    note = f"{text}\n{prefix} {base64.b64encode(bytes(raw)).decode()}\n"
    conn.execute("UPDATE audit_checkpoints SET note = ? WHERE id = ?", (note, cid))


def remove_checkpoints(conn: sqlite3.Connection, b: Built) -> None:
    conn.execute("DELETE FROM audit_checkpoints")


def remove_last_checkpoint(conn: sqlite3.Connection, b: Built) -> None:
    conn.execute("DELETE FROM audit_checkpoints WHERE size = 20")


def truncate_tail(conn: sqlite3.Connection, b: Built) -> None:
    conn.execute("DELETE FROM audit_records WHERE seq > 15")
    conn.execute("DELETE FROM audit_checkpoints WHERE size > 15")
    (prev,) = conn.execute("SELECT hash FROM audit_records WHERE seq = 15").fetchone()
    conn.execute("UPDATE audit_head SET seq = 15, hash = ? WHERE id = 1", (prev,))


def roll_back(conn: sqlite3.Connection, b: Built) -> None:
    with closing(sqlite3.connect(b.at10)) as older:
        older.backup(conn)


def rewrite_and_rehash(conn: sqlite3.Connection, b: Built) -> None:
    body = _body(conn, 7).replace(b'"rule_id":"pii-onprem"', b'"rule_id":"allow-all"')
    conn.execute("UPDATE audit_records SET body = ? WHERE seq = 7", (body,))
    _rechain(conn, 7)


def rewrite_unmarked(conn: sqlite3.Connection, b: Built) -> None:
    """A trail from before checkpoints carried marks: the same rewrite is only a range."""
    signer = FileSigner.load(b.key, key_id="audit")
    rows = conn.execute("SELECT id, note FROM audit_checkpoints").fetchall()
    for cid, note in rows:
        cp = parse_checkpoint(note)
        plain = sign_checkpoint(
            signer, origin=cp.origin, size=cp.size, head=cp.head, time=cp.time, reason=cp.reason
        )
        conn.execute("UPDATE audit_checkpoints SET note = ? WHERE id = ?", (plain, cid))
    rewrite_and_rehash(conn, b)


def _resign(conn: sqlite3.Connection, b: Built) -> FileSigner:
    """Rewrite, rehash, and re-sign every checkpoint (same size and time) with a new key."""
    rewrite_and_rehash(conn, b)
    forger = FileSigner.generate(b.key.with_name(f"forger-{uuid.uuid4().hex}.pem"), key_id="x")
    rows = conn.execute("SELECT id, size, time FROM audit_checkpoints").fetchall()
    for cid, size, time in rows:
        (head,) = conn.execute("SELECT hash FROM audit_records WHERE seq = ?", (size,)).fetchone()
        note = sign_checkpoint(
            forger, origin="bastion.local/audit", size=size, head=head, time=time, reason="x"
        )
        conn.execute("UPDATE audit_checkpoints SET note = ? WHERE id = ?", (note, cid))
    return forger


def rewrite_and_resign(conn: sqlite3.Connection, b: Built) -> None:
    """The attacker rewrites, rehashes, and re-signs every checkpoint with a key of their own."""
    _resign(conn, b)


def checkpoint_size_column(conn: sqlite3.Connection, b: Built) -> None:
    """Only the unsigned copy: ``prune`` reads this column, so it must not be trusted."""
    conn.execute("UPDATE audit_checkpoints SET size = 999 WHERE size = 10")


def checkpoint_time_column(conn: sqlite3.Connection, b: Built) -> None:
    conn.execute(
        "UPDATE audit_checkpoints SET time = '2000-01-01T00:00:00.000000Z' WHERE size = 15"
    )


def head_hash(conn: sqlite3.Connection, b: Built) -> None:
    conn.execute("UPDATE audit_head SET hash = ? WHERE id = 1", (b"\x00" * 32,))


def untouched(conn: sqlite3.Connection, b: Built) -> None:
    return


Tamper = Callable[[sqlite3.Connection, Built], None]

CASES: list[tuple[Tamper, bool | str, int, tuple[str, ...]]] = [
    (untouched, False, 0, ("OK", "covered through seq 20", "checkpoint key (pinned): SHA256:")),
    (untouched, True, 0, ("OK",)),
    (checkpoint_size_column, False, 1, ("checkpoint #2's size column says 999", "says 10")),
    (checkpoint_time_column, False, 1, ("checkpoint #3's time column says 2000-01-01",)),
    (head_hash, False, 1, ("head row holds a hash that is not record seq 20's",)),
    (rewrite_and_rehash, "reference", 1, ("record seq 7 (id", "differ from the reference copy")),
    (change_field, False, 1, ("record seq 5", "altered")),
    (delete_record, False, 1, ("record seq 8 is missing",)),
    (swap_records, False, 1, ("record seq 12", "its signed body is record seq 13")),
    (insert_record, False, 1, ("record seq 6 was inserted",)),
    (append_after_the_fact, False, 2, ("NOT YET COVERED", "first: seq 21")),
    (corrupt_signature, False, 1, ("(size 20,", "invalid signature")),
    (remove_checkpoints, False, 2, ("NOT YET COVERED", "first: seq 1,")),
    (remove_last_checkpoint, False, 2, ("first: seq 16,",)),
    (truncate_tail, True, 1, ("records 16..20 were removed",)),
    (roll_back, True, 1, ("records 11..20 were removed",)),
    (
        rewrite_and_rehash,
        False,
        1,
        ("record seq 7 (id", "records 6..10 do not match the checkpoint", "signed for seq 6"),
    ),
    (rewrite_unmarked, False, 1, ("one of records 6..10 was altered",)),
    (rewrite_and_resign, False, 1, ("signed by an unknown key",)),
]
IDS = [
    "control",
    "control-pinned",
    "checkpoint-size-column-edited",
    "checkpoint-time-column-edited",
    "head-hash-edited",
    "changed-and-rehashed-named-by-reference-copy",
    "field-changed",
    "record-deleted",
    "records-swapped",
    "record-inserted",
    "appended-after-the-fact",
    "checkpoint-signature-corrupted",
    "checkpoints-removed",
    "last-checkpoint-removed",
    "tail-truncated-pinned",
    "rolled-back-pinned",
    "changed-and-rehashed-named-by-marks",
    "changed-and-rehashed-without-marks-is-a-range",
    "changed-rehashed-resigned",
]


@pytest.mark.parametrize(("tamper", "pin", "exit_code", "expected"), CASES, ids=IDS)
def test_verify_names_the_tampering(
    built: Built,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: Tamper,
    pin: bool | str,
    exit_code: int,
    expected: tuple[str, ...],
) -> None:
    """Each tampering makes verify exit non-zero naming the first record (or checkpoint)
    concerned; the untouched trail verifies with exit 0."""
    db = tmp_path / "trail.db"
    _copy(built.db, db)
    with closing(sqlite3.connect(db)) as conn:
        tamper(conn, built)
        conn.commit()
    argv = ["audit", "verify", "--sqlite", str(db), "--pubkey", str(built.pubkey)]
    if pin == "reference":
        argv += ["--reference", str(built.at10)]
    elif pin:
        argv += ["--checkpoint", str(built.pinned)]
    code = main(argv)
    out = capsys.readouterr().out
    assert code == exit_code, out
    for text in expected:
        assert text in out, out
    if exit_code == 1:
        first = out.split("FAILED: ", 1)[1].splitlines()[0]
        assert expected[0] in first, out


def forge_with_own_key(conn: sqlite3.Connection, b: Built) -> None:
    """The issue's attack: re-chain after an edit, add one's own key to the key table and
    re-sign the checkpoints with it."""
    forger = _resign(conn, b)
    key = verifier_key("bastion.local/audit", forger.public_key_pem())
    conn.execute("DELETE FROM audit_keys")
    conn.execute(
        "INSERT INTO audit_keys VALUES (?, ?, ?, ?, 't')",
        (key.key_hash, key.name, key.algorithm, key.public_key_pem),
    )


@pytest.mark.parametrize(
    ("flags", "exit_code", "stream", "expected"),
    [
        ([], 1, "err", "needs the signer's public key"),
        (["--pubkey"], 1, "out", "signed by an unknown key"),
        (["--pubkey"], 1, "out", "key table holds a key that is not pinned"),
        (["--config"], 1, "out", "signed by an unknown key"),
        (["--trust-stored-keys"], 0, "out", "NOT PROVEN: who signed"),
    ],
    ids=[
        "no-key-refused",
        "pinned-pubkey-catches",
        "pinned-pubkey-warns-of-the-forgers-key",
        "config-signer-catches",
        "trust-stored-says",
    ],
)
def test_forged_key_resign_needs_a_pinned_key(
    built: Built,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    exit_code: int,
    stream: str,
    expected: str,
) -> None:
    """A re-chained, re-signed trail with the forger's key in the key table is refused unless
    a pinned key (--pubkey or the configured signer) is used; --trust-stored-keys accepts it
    but its output says that authorship is not proven."""
    db = tmp_path / "trail.db"
    _copy(built.db, db)
    with closing(sqlite3.connect(db)) as conn:
        forge_with_own_key(conn, built)
        conn.commit()
    argv = ["audit", "verify", "--sqlite", str(db)]
    if flags == ["--pubkey"]:
        argv += ["--pubkey", str(built.pubkey)]
    elif flags == ["--config"]:
        config = tmp_path / "bastion.yaml"
        config.write_text(f"audit:\n  path: {db}\nsigning:\n  key_file: {built.key}\n")
        argv = ["audit", "verify", "--config", str(config)]
    else:
        argv += flags
    code = main(argv)
    captured = capsys.readouterr()
    assert code == exit_code, captured
    assert expected in getattr(captured, stream), captured


def test_chain_hash_is_sha256_of_prev_and_body(built: Built) -> None:
    """The stored hash of record n is SHA-256(hash(n-1) || canonical body), as DESIGN.md says."""
    with closing(sqlite3.connect(built.db)) as conn:
        (h1,), (h2, b2) = (
            conn.execute("SELECT hash FROM audit_records WHERE seq = 1").fetchone(),
            conn.execute("SELECT hash, body FROM audit_records WHERE seq = 2").fetchone(),
        )
    assert h2 == hashlib.sha256(h1 + b2).digest()


def test_marks_name_a_rewrite_in_a_busy_interval(tmp_path: Path) -> None:
    """With 400 records between two checkpoints (more than the 64 marks a checkpoint carries),
    a re-chained rewrite is narrowed to the span between two signed marks, and the marks are
    spread over the whole interval."""
    signer = FileSigner.generate(tmp_path / "audit.pem", key_id="audit")
    db = tmp_path / "trail.db"

    async def write() -> None:
        trail = open_audit_trail(AuditConfig(path=db, checkpoint_interval_s=3600), signer)
        await trail.append_decision(sample_decision(0))
        await trail.checkpoint()
        for start in range(1, 401, 50):
            await asyncio.gather(
                *(trail.append_decision(sample_decision(i)) for i in range(start, start + 50))
            )
        await trail.close()

    asyncio.run(write())
    with closing(sqlite3.connect(db)) as conn:
        (note,) = conn.execute("SELECT note FROM audit_checkpoints WHERE size = 401").fetchone()
        marks = parse_checkpoint(note).marks
        assert 32 <= len(marks) <= 64
        assert marks[0][0] < 60
        assert marks[-1][0] > 340
        body = _body(conn, 200).replace(b'"action":"onprem"', b'"action":"managed"')
        conn.execute("UPDATE audit_records SET body = ? WHERE seq = 200", (body,))
        _rechain(conn, 200)
        conn.commit()
    store = open_store(AuditConfig(path=db), read_only=True)
    try:
        report = verify_store(store, public_keys=[signer.public_key_pem()])
    finally:
        store.close()
    problem = report.first_problem
    assert problem is not None
    assert problem.kind == "rewritten"
    assert problem.seq is not None
    assert problem.through_seq is not None
    assert problem.seq <= 200 <= problem.through_seq
    assert problem.through_seq - problem.seq < 400 // 32
