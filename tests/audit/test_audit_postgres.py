"""The PostgreSQL store behind the same interface, on a real server (``tests/fixtures/postgres``):
durability, group commit, two replicas sharing one log, fail-closed and recovery, tampering."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
import pytest

from gateway.audit import (
    AuditConfig,
    AuditUnavailable,
    GroupCommitTrail,
    OutcomeRecord,
    open_store,
    text_digest,
    verify_store,
)
from pki.secret import Secret
from pki.signing import FileSigner
from tests.audit.helpers import assert_no_text_in_trail, assert_trail_verifies, sample_decision

pytestmark = pytest.mark.postgres

Opener = Callable[..., GroupCommitTrail]


@pytest.fixture
def pg_config(postgres_dsn: str) -> AuditConfig:
    return AuditConfig(backend="postgres", dsn=postgres_dsn, checkpoint_interval_s=3600)


def _ids(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM audit_records ORDER BY seq")]


async def test_postgres_append_close_verify(
    open_trail: Opener, pg_config: AuditConfig, postgres_dsn: str, signer: FileSigner
) -> None:
    """Decisions and outcomes are durable when acknowledged; close signs a covering checkpoint."""
    trail = open_trail(pg_config)
    decision_id = await trail.append_decision(sample_decision())
    assert decision_id in _ids(postgres_dsn)
    outcome_id = await trail.append_outcome(OutcomeRecord(decision_id, 200, 5.0, "w1", 3, 2))
    await trail.close()
    assert _ids(postgres_dsn) == [decision_id, outcome_id]
    report = assert_trail_verifies(pg_config, public_keys=[signer.public_key_pem()])
    assert (report.records, report.covered_through) == (2, 2)


async def test_postgres_group_commit(open_trail: Opener, pg_config: AuditConfig) -> None:
    """200 concurrent appends are all durable in fewer transactions than records."""
    trail = open_trail(pg_config)
    ids = await asyncio.gather(*(trail.append_decision(sample_decision(i)) for i in range(200)))
    assert len(set(ids)) == 200
    assert trail.stats().transactions < 200
    await trail.close()
    assert assert_trail_verifies(pg_config).records == 200


async def test_two_replicas_share_one_log(
    open_trail: Opener, pg_config: AuditConfig, postgres_dsn: str, signer: FileSigner
) -> None:
    """Two store instances (two gateway replicas) interleave, alternately and concurrently,
    into one contiguous, verifiable log holding every record of both."""
    a, b = open_trail(pg_config), open_trail(pg_config)
    alternating = []
    for i in range(10):
        alternating.append(await a.append_decision(sample_decision(i)))
        alternating.append(await b.append_decision(sample_decision(i)))
    concurrent = await asyncio.gather(
        *(t.append_decision(sample_decision(i)) for i in range(100) for t in (a, b))
    )
    await a.close()
    await b.close()
    stored = _ids(postgres_dsn)
    assert stored[:20] == alternating
    assert sorted(stored[20:]) == sorted(concurrent)
    report = assert_trail_verifies(pg_config, public_keys=[signer.public_key_pem()])
    assert (report.first_seq, report.last_seq, report.records) == (1, 220, 220)


async def test_postgres_lock_fails_closed_then_recovers(
    open_trail: Opener, pg_config: AuditConfig, postgres_dsn: str
) -> None:
    """While another session holds the head row, appends fail with AuditUnavailable after the
    lock timeout; once released, the same trail writes again and the log verifies."""
    trail = open_trail(pg_config, lock_timeout_s=0.2)
    await trail.append_decision(sample_decision())
    with psycopg.connect(postgres_dsn) as holder:
        holder.execute("SELECT 1 FROM audit_head WHERE id = 1 FOR UPDATE")
        with pytest.raises(AuditUnavailable, match="lock timeout"):
            await trail.append_decision(sample_decision())
        holder.rollback()
    await trail.append_decision(sample_decision())
    await trail.close()
    assert assert_trail_verifies(pg_config).records == 2


async def test_postgres_tampering_is_named(
    open_trail: Opener, pg_config: AuditConfig, postgres_dsn: str, signer: FileSigner
) -> None:
    """A field changed in a PostgreSQL row fails verification naming that record."""
    trail = open_trail(pg_config)
    for i in range(6):
        await trail.append_decision(sample_decision(i))
    await trail.close()
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute(
            "UPDATE audit_records SET body = convert_to(replace("
            "convert_from(body, 'UTF8'), 'onprem-gpu', 'managed-x'), 'UTF8') WHERE seq = 4"
        )
    store = open_store(pg_config)
    try:
        report = verify_store(store, public_keys=[signer.public_key_pem()])
    finally:
        store.close()
    assert report.first_problem is not None
    assert report.first_problem.seq == 4
    assert "record seq 4" in report.first_problem.message


async def test_postgres_holds_no_prompt_text(open_trail: Opener, pg_config: AuditConfig) -> None:
    """Only digests reach the PostgreSQL rows, never the prompt."""
    prompt = "Patient Jane Roe, MRN 4451-22, reports chest pain"
    trail = open_trail(pg_config)
    digest = text_digest(Secret("k" * 40), prompt)
    await trail.append_decision(sample_decision(text_digests=(digest,)))
    await trail.close()
    assert_no_text_in_trail(pg_config, [prompt, "4451-22"])
