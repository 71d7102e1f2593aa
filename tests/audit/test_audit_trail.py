"""The SQLite trail's write path: durability, group commit, fail-closed and recovery."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from gateway.audit import (
    AuditConfig,
    AuditConfigError,
    AuditUnavailable,
    GroupCommitTrail,
    OutcomeRecord,
    open_audit_trail,
    text_digest,
)
from pki.secret import Secret
from pki.signing import FileSigner
from tests.audit.helpers import (
    assert_no_text_in_trail,
    assert_trail_verifies,
    hold_write_lock,
    sample_decision,
)

Opener = Callable[..., GroupCommitTrail]


def _ids_in(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM audit_records")}


async def test_append_is_durable_when_it_returns(
    open_trail: Opener, sqlite_config: AuditConfig
) -> None:
    """A record id handed back is already committed: another connection reads it at once."""
    trail = open_trail(sqlite_config)
    record_id = await trail.append_decision(sample_decision())
    assert sqlite_config.path is not None
    assert record_id in _ids_in(sqlite_config.path)
    assert record_id.startswith("dec_")


@pytest.mark.parametrize("max_wait_ms", [0.0, 2.0], ids=["no-linger", "linger-2ms"])
async def test_concurrent_appends_share_transactions(
    open_trail: Opener, sqlite_config: AuditConfig, max_wait_ms: float
) -> None:
    """200 concurrent appends are all durable, in fewer transactions than records."""
    trail = open_trail(sqlite_config, max_wait_ms=max_wait_ms)
    ids = await asyncio.gather(*(trail.append_decision(sample_decision(i)) for i in range(200)))
    stats = trail.stats()
    assert len(set(ids)) == 200
    assert stats.records == 200
    assert stats.transactions < 200
    assert sqlite_config.path is not None
    assert set(ids) <= _ids_in(sqlite_config.path)
    await trail.close()
    assert_trail_verifies(sqlite_config)


async def test_locked_store_fails_every_waiter_then_recovers(
    open_trail: Opener, sqlite_config: AuditConfig
) -> None:
    """While the write lock is held elsewhere every caller gets AuditUnavailable; afterwards
    appends succeed again without a restart and the trail still verifies."""
    trail = open_trail(sqlite_config, lock_timeout_s=0.05)
    first = await trail.append_decision(sample_decision())
    assert sqlite_config.path is not None
    with hold_write_lock(sqlite_config.path):
        results = await asyncio.gather(
            *(trail.append_decision(sample_decision(i)) for i in range(5)),
            return_exceptions=True,
        )
    assert all(isinstance(r, AuditUnavailable) for r in results), results
    assert "locked" in str(results[0])
    after = await trail.append_decision(sample_decision())
    assert {first, after} <= _ids_in(sqlite_config.path)
    assert trail.stats().failed_transactions >= 1
    await trail.close()
    report = assert_trail_verifies(sqlite_config)
    assert report.records == 2


async def test_store_file_gone_fails_closed_then_resumes(
    open_trail: Opener, sqlite_config: AuditConfig
) -> None:
    """A trail file moved away is refused (no writes into a detached file, no new empty trail),
    and appends resume when the file is back."""
    trail = open_trail(sqlite_config)
    await trail.append_decision(sample_decision())
    assert sqlite_config.path is not None
    aside = sqlite_config.path.with_name("moved.db")
    sqlite_config.path.rename(aside)
    with pytest.raises(AuditUnavailable, match="is gone"):
        await trail.append_decision(sample_decision())
    with pytest.raises(AuditUnavailable, match="cannot be opened"):
        await trail.append_decision(sample_decision())
    assert not sqlite_config.path.exists()
    aside.rename(sqlite_config.path)
    await trail.append_decision(sample_decision())
    await trail.close()
    assert assert_trail_verifies(sqlite_config).records == 2


async def test_closed_trail_refuses(open_trail: Opener, sqlite_config: AuditConfig) -> None:
    """After close() an append raises AuditUnavailable instead of hanging or writing."""
    trail = open_trail(sqlite_config)
    await trail.close()
    with pytest.raises(AuditUnavailable, match="closed"):
        await trail.append_decision(sample_decision())


async def test_close_signs_a_checkpoint_covering_everything(
    open_trail: Opener, sqlite_config: AuditConfig, signer: FileSigner
) -> None:
    """close() signs a checkpoint over the whole log, verifiable with the pinned public key."""
    trail = open_trail(sqlite_config)
    decision_id = await trail.append_decision(sample_decision())
    await trail.append_outcome(
        OutcomeRecord(decision_id, 200, 12.5, "worker-1", prompt_tokens=10, completion_tokens=3)
    )
    await trail.close()
    report = assert_trail_verifies(sqlite_config, public_keys=[signer.public_key_pem()])
    assert (report.records, report.covered_through, report.checkpoints) == (2, 2, 1)


async def test_periodic_checkpoint_without_traffic(
    open_trail: Opener, sqlite_config: AuditConfig
) -> None:
    """The writer signs a checkpoint once the interval passes, even with no further appends."""
    trail = open_trail(sqlite_config, checkpoint_interval_s=0.05)
    await trail.append_decision(sample_decision())
    for _ in range(200):  # bounded wait for the writer's timer, not a timing assertion
        if trail.stats().checkpoints:
            break
        await asyncio.sleep(0.02)
    assert trail.stats().checkpoints >= 1
    report = assert_trail_verifies(sqlite_config)
    assert report.covered_through == 1


async def test_reopen_continues_the_chain(open_trail: Opener, sqlite_config: AuditConfig) -> None:
    """A second gateway run appends to the same chain, and the whole log still verifies."""
    first = open_trail(sqlite_config)
    await first.append_decision(sample_decision(1))
    await first.close()
    second = open_trail(sqlite_config)
    await second.append_decision(sample_decision(2))
    await second.close()
    report = assert_trail_verifies(sqlite_config)
    assert (report.records, report.checkpoints) == (2, 2)


async def test_origin_mismatch_is_refused(
    open_trail: Opener, sqlite_config: AuditConfig, signer: FileSigner
) -> None:
    """A config naming another origin cannot open (and fork) an existing trail."""
    trail = open_trail(sqlite_config)
    await trail.close()
    with pytest.raises(AuditConfigError, match="belongs to origin"):
        open_audit_trail(sqlite_config.model_copy(update={"origin": "other.test/log"}), signer)


async def test_prompt_text_never_reaches_the_store(
    open_trail: Opener, sqlite_config: AuditConfig
) -> None:
    """Only keyed digests of the texts are stored: the prompt is nowhere in the file bytes."""
    prompt = "My SSN is 078-05-1120, please update my billing address"
    key = Secret("k" * 40)
    trail = open_trail(sqlite_config)
    await trail.append_decision(sample_decision(text_digests=(text_digest(key, prompt),)))
    await trail.close()
    assert_no_text_in_trail(sqlite_config, [prompt, "078-05-1120"])
    with pytest.raises(AssertionError):
        assert_no_text_in_trail(sqlite_config, ["spiffe://bastion.test/billing"])  # control


_CRASH_WRITER = """
import asyncio, sys
from pathlib import Path
from gateway.audit import AuditConfig, open_audit_trail
from pki.signing import FileSigner
from tests.audit.helpers import sample_decision

async def main():
    signer = FileSigner.load(Path(sys.argv[2]), key_id="audit")
    trail = open_audit_trail(AuditConfig(path=Path(sys.argv[1])), signer)
    async def client(n):
        for i in range(10_000):
            rid = await trail.append_decision(sample_decision(n * 100_000 + i))
            sys.stdout.write(rid + "\\n")
            sys.stdout.flush()
    await asyncio.gather(*(client(n) for n in range(16)))

asyncio.run(main())
"""


def test_sigkill_loses_no_acknowledged_record(tmp_path: Path, signer: FileSigner) -> None:
    """SIGKILL under 16 concurrent writers: every id a writer got back is in the trail after
    restart, and the trail verifies (its unsigned tail reported as not yet covered)."""
    key = tmp_path / "keys" / "audit.pem"
    db = tmp_path / "crash.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASH_WRITER, str(db), str(key)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.stdout is not None
    acknowledged: list[str] = []
    deadline = time.monotonic() + 60
    while len(acknowledged) < 500 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acknowledged.append(line.strip())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    acknowledged += [line.strip() for line in proc.stdout if line.strip()]
    assert len(acknowledged) >= 500
    assert set(acknowledged) <= _ids_in(db)
    report = assert_trail_verifies(db, public_keys=[signer.public_key_pem()], allow_uncovered=True)
    assert report.records >= len(acknowledged)
