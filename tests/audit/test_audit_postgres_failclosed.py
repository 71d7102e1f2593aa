"""The real gateway with its trail in a real PostgreSQL server that goes away, turns read-only,
or answers slower than the statement timeout: every request is refused with 503
``audit_unavailable``, nothing reaches any upstream, and service resumes by itself once the
server is back (no restart, no operator action).

The server here is this module's own (``running_postgres``), so stopping it disturbs no other
test; it is restarted with the same data directory, port and socket directory.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
import psycopg
import pytest

from tests.fixtures.pki import CertPair
from tests.fixtures.postgres import (
    PostgresServer,
    PostgresUnavailable,
    _run,
    _run_as,
    running_postgres,
)
from tests.fixtures.upstream import RecordingUpstream
from tests.gateway.conftest import RunningGateway, billing, start_gateway  # noqa: F401 (fixtures)

pytestmark = pytest.mark.postgres

RESUME_WITHIN_S = 30.0  # a bound on polling, not a timing assertion


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[PostgresServer]:
    try:
        with running_postgres() as server:
            yield server
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


def _pg_ctl(server: PostgresServer, action: str) -> None:
    """Stop (fast: connections are cut) or start the module's server in place."""
    bin_dir = Path("/usr/lib/postgresql/15/bin")
    base = server.data_dir.parent
    argv = [str(bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-w", "-t", "60"]
    if action == "stop":
        argv += ["-m", "fast", "stop"]
    else:
        options = f"-p {server.port} -c listen_addresses=127.0.0.1 -k {base} -c max_connections=50"
        argv += ["-l", str(base / "server.log"), "-o", options, "start"]
    done = _run(argv, account=_run_as(), cwd=base, timeout=90)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def dsn(own_postgres: PostgresServer) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(own_postgres.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield own_postgres.dsn(name)
    with psycopg.connect(own_postgres.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_gateway(
    start_gateway: Callable[..., RunningGateway],  # noqa: F811 (the imported fixture)
    dsn: str,
    tmp_path: Path,
) -> RunningGateway:
    key = tmp_path / "digest.key"
    key.write_text("k" * 48)
    return start_gateway(
        audit={
            "backend": "postgres",
            "dsn": dsn,
            "digest_key_file": str(key),
            "lock_timeout_s": 1.0,  # statement timeout: twice this
            "checkpoint_interval_s": 3600,
        },
        signing={"key_file": str(tmp_path / "signing.key")},
    )


def _chat(gateway: RunningGateway, cert: CertPair) -> httpx2.Response:
    with gateway.client(cert) as client:
        return client.post(
            "/v1/chat/completions",
            json={"model": "chat-default", "messages": [{"role": "user", "content": "hello"}]},
        )


def _admin(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def _outage_stopped(server: PostgresServer, dsn: str) -> Callable[[], None]:
    _pg_ctl(server, "stop")
    return lambda: _pg_ctl(server, "start")


def _outage_read_only(server: PostgresServer, dsn: str) -> Callable[[], None]:
    # As after a failover onto a standby: every transaction, open sessions included, is
    # read-only from the next statement on.
    _admin(
        server.dsn(),
        "ALTER SYSTEM SET default_transaction_read_only = on",
        "SELECT pg_reload_conf()",
    )
    return lambda: _admin(
        server.dsn(), "ALTER SYSTEM RESET default_transaction_read_only", "SELECT pg_reload_conf()"
    )


def _outage_slow(server: PostgresServer, dsn: str) -> Callable[[], None]:
    # Every insert takes 10 s, beyond the 2 s statement timeout the store sets.
    _admin(
        dsn,
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(10); RETURN NEW; END $$",
        "CREATE TRIGGER slow BEFORE INSERT ON audit_records FOR EACH ROW EXECUTE FUNCTION slow()",
    )
    return lambda: _admin(dsn, "DROP TRIGGER slow ON audit_records")


@pytest.mark.parametrize(
    "outage",
    [_outage_stopped, _outage_read_only, _outage_slow],
    ids=["server-stopped", "read-only", "slower-than-statement-timeout"],
)
def test_postgres_outage_refuses_forwards_nothing_and_resumes(
    pg_gateway: RunningGateway,
    own_postgres: PostgresServer,
    dsn: str,
    billing: CertPair,  # noqa: F811 (the imported fixture)
    recording_upstream: RecordingUpstream,
    outage: Callable[[PostgresServer, str], Callable[[], None]],
) -> None:
    """While the trail cannot commit, each request gets 503 audit_unavailable and no upstream
    sees a byte; once PostgreSQL is back the next requests succeed, with no restart."""
    assert _chat(pg_gateway, billing).status_code == 200
    recording_upstream.reset()
    restore = outage(own_postgres, dsn)
    try:
        for _ in range(2):  # the first failure drops the connection; the retry fails too
            response = _chat(pg_gateway, billing)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "audit_unavailable"
            assert response.headers.get("retry-after")
        assert recording_upstream.received == []
    finally:
        restore()
    deadline = time.monotonic() + RESUME_WITHIN_S
    status = 0
    while time.monotonic() < deadline:
        status = _chat(pg_gateway, billing).status_code
        if status == 200:
            break
        time.sleep(0.2)
    assert status == 200, "service did not resume by itself after PostgreSQL came back"
    assert len(recording_upstream.received) == 1
    with psycopg.connect(dsn) as conn:
        (decisions,) = conn.execute(
            "SELECT count(*) FROM audit_records WHERE kind = 'decision'"
        ).fetchone()
    # The two requests answered 200; no refused request left a record behind.
    assert decisions == 2
