"""The PostgreSQL store: one ordered log shared by several gateway replicas.

Each replica runs its own group-commit writer; their transactions serialize on the head row
(``SELECT … FOR UPDATE``), so seq numbers and the chain stay one total order however the
replicas interleave. ``synchronous_commit`` is forced on for the session: a commit returns only
once the server has flushed its WAL. Errors (``psycopg.Error``) become
:class:`AuditUnavailable`; the connection is dropped and the next call reconnects.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from gateway.audit._chain import Entry, Head, SealedRecord, genesis_hash, seal
from gateway.audit._checkpoint import VerifierKey
from gateway.audit._errors import AuditConfigError, AuditUnavailable
from gateway.audit._records import rfc3339_now
from gateway.audit._store import StoredCheckpoint, StoredRecord
from pki.secret import Secret

__all__ = ["PostgresStore"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit_head (id INTEGER PRIMARY KEY CHECK (id = 1),"
    " seq BIGINT NOT NULL, hash BYTEA NOT NULL, time TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit_records (seq BIGINT PRIMARY KEY, id TEXT NOT NULL UNIQUE,"
    " kind TEXT NOT NULL, time TEXT NOT NULL, body BYTEA NOT NULL, hash BYTEA NOT NULL)",
    "CREATE INDEX IF NOT EXISTS audit_records_time ON audit_records (time)",
    "CREATE TABLE IF NOT EXISTS audit_checkpoints (id BIGSERIAL PRIMARY KEY,"
    " size BIGINT NOT NULL, time TEXT NOT NULL, note TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit_keys (key_hash BYTEA PRIMARY KEY, name TEXT NOT NULL,"
    " algorithm TEXT NOT NULL, public_key_pem BYTEA NOT NULL, added TEXT NOT NULL)",
)
# Replicas starting together must not race to create the schema.
_SCHEMA_LOCK = 0x62617374696F6E  # "bastion"


class PostgresStore:
    """See the module docstring. ``create=True`` creates the tables if they do not exist."""

    def __init__(
        self,
        dsn: Secret,
        *,
        origin: str | None = None,
        create: bool = False,
        lock_timeout_s: float = 5.0,
        read_only: bool = False,
    ) -> None:
        self._dsn = dsn
        self._read_only = read_only
        self._lock_timeout_ms = int(lock_timeout_s * 1000)
        self._transactions = 0
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._location = "postgresql"
        if create:
            if origin is None:
                raise AuditConfigError("cannot create an audit trail without an origin")
            self._create(origin)
        with self._reading() as conn:
            row = conn.execute("SELECT value FROM audit_meta WHERE key = 'origin'").fetchone()
        if row is None:
            raise AuditConfigError(f"{self._location} holds no Bastion audit trail (no origin)")
        self._origin = str(row[0])
        if origin is not None and origin != self._origin:
            raise AuditConfigError(
                f"audit trail {self._location} belongs to origin {self._origin!r}, but the "
                f"config says {origin!r}; point audit.dsn at that origin's database"
            )

    @property
    def location(self) -> str:
        return self._location

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def transactions(self) -> int:
        return self._transactions

    # -- connection ---------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            conn = psycopg.connect(
                self._dsn.reveal(),
                autocommit=True,
                connect_timeout=max(1, self._lock_timeout_ms // 1000),
                options=f"-c lock_timeout={self._lock_timeout_ms} -c synchronous_commit=on"
                + (" -c default_transaction_read_only=on" if self._read_only else ""),
            )
        except psycopg.Error as exc:
            raise self._unavailable("cannot be reached", exc) from None
        info = conn.info
        self._location = f"postgresql://{info.host}:{info.port}/{info.dbname}"
        self._conn = conn
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _unavailable(self, what: str, exc: psycopg.Error) -> AuditUnavailable:
        # message_primary leaves out DETAIL, which may quote row values.
        detail = exc.diag.message_primary or (str(exc).splitlines() or [""])[0]
        return AuditUnavailable(
            f"audit trail {self._location} {what} ({type(exc).__name__}: {detail}); requests "
            "are refused until it can write again: check the server, disk space and locks"
        )

    @contextmanager
    def _writing(self, what: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        conn = self._connection()
        try:
            with conn.transaction():
                yield conn
        except psycopg.Error as exc:
            self._drop()
            raise self._unavailable(what, exc) from None

    @contextmanager
    def _reading(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        conn = self._connection()
        try:
            yield conn
        except psycopg.Error as exc:
            self._drop()
            raise self._unavailable("cannot be read", exc) from None

    def _create(self, origin: str) -> None:
        now = rfc3339_now()
        with self._writing("cannot be created") as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.cursor().executemany(
                "INSERT INTO audit_meta (key, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                [("origin", origin), ("created", now), ("format", "bastion-audit-v1")],
            )
            conn.execute(
                "INSERT INTO audit_head (id, seq, hash, time) VALUES (1, 0, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (genesis_hash(origin), now),
            )

    # -- writes -------------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> list[SealedRecord]:
        with self._writing("cannot be written") as conn:
            # A hung server must turn into a 503, not into callers waiting forever.
            conn.execute(
                "SELECT set_config('statement_timeout', %s, true)",
                (str(self._lock_timeout_ms * 2),),
            )
            row = conn.execute(
                "SELECT seq, hash, time FROM audit_head WHERE id = 1 FOR UPDATE"
            ).fetchone()
            if row is None:
                raise AuditUnavailable(f"audit trail {self._location} has no head row")
            seq, hash_, time = row
            sealed = seal(entries, Head(int(seq), bytes(hash_), str(time)), rfc3339_now())
            with conn.cursor().copy(
                "COPY audit_records (seq, id, kind, time, body, hash) FROM STDIN"
            ) as copy:
                for r in sealed:
                    copy.write_row((r.seq, r.record_id, r.kind, r.time, r.body, r.hash))
            last = sealed[-1]
            conn.execute(
                "UPDATE audit_head SET seq = %s, hash = %s, time = %s WHERE id = 1",
                (last.seq, last.hash, last.time),
            )
        self._transactions += 1
        return sealed

    def add_checkpoint(self, size: int, time: str, note: str) -> None:
        with self._writing("cannot store a checkpoint") as conn:
            conn.execute(
                "INSERT INTO audit_checkpoints (size, time, note) VALUES (%s, %s, %s)",
                (size, time, note),
            )

    def register_key(self, key: VerifierKey) -> None:
        with self._writing("cannot register the checkpoint key") as conn:
            conn.execute(
                "INSERT INTO audit_keys (key_hash, name, algorithm, public_key_pem, added) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (key.key_hash, key.name, key.algorithm, key.public_key_pem, rfc3339_now()),
            )

    def prune(self, through_seq: int, anchor_time: str, anchor_note: str) -> int:
        with self._writing("cannot be pruned") as conn:
            conn.execute(
                "INSERT INTO audit_checkpoints (size, time, note) VALUES (%s, %s, %s)",
                (through_seq, anchor_time, anchor_note),
            )
            removed = conn.execute(
                "DELETE FROM audit_records WHERE seq <= %s", (through_seq,)
            ).rowcount
            conn.execute("DELETE FROM audit_checkpoints WHERE size < %s", (through_seq,))
        return removed

    # -- reads --------------------------------------------------------------------------------

    def head(self) -> Head:
        with self._reading() as conn:
            row = conn.execute("SELECT seq, hash, time FROM audit_head WHERE id = 1").fetchone()
        if row is None:
            raise AuditUnavailable(f"audit trail {self._location} has no head row")
        return Head(int(row[0]), bytes(row[1]), str(row[2]))

    def checkpoint_notes(self) -> list[str]:
        with self._reading() as conn:
            rows = conn.execute("SELECT note FROM audit_checkpoints ORDER BY id").fetchall()
        return [str(r[0]) for r in rows]

    def checkpoints(self) -> list[StoredCheckpoint]:
        with self._reading() as conn:
            rows = conn.execute("SELECT size, time, note FROM audit_checkpoints ORDER BY id")
            return [StoredCheckpoint(int(size), str(time), str(note)) for size, time, note in rows]

    def keys(self) -> list[VerifierKey]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT name, key_hash, algorithm, public_key_pem FROM audit_keys ORDER BY added"
            ).fetchall()
        return [VerifierKey(str(n), bytes(h), str(a), bytes(p)) for n, h, a, p in rows]

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        with self._reading() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield

    def records(
        self, *, after_seq: int = 0, since: str | None = None, until: str | None = None
    ) -> Iterator[StoredRecord]:
        # A server-side cursor streams the log instead of loading it into memory.
        with (
            self._reading() as conn,
            conn.transaction(),
            conn.cursor(name="bastion_audit_records", binary=True) as cursor,
        ):
            cursor.itersize = 20_000
            cursor.execute(
                "SELECT seq, id, kind, time, body, hash FROM audit_records "
                "WHERE seq > %s AND time >= %s AND time < %s ORDER BY seq",
                (after_seq, since or "", until or "~"),
            )
            for seq, rid, kind, time, body, hash_ in cursor:
                yield StoredRecord(seq, rid, kind, time, bytes(body), bytes(hash_))

    def last_records(self, count: int) -> list[StoredRecord]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT seq, id, kind, time, body, hash FROM audit_records "
                "ORDER BY seq DESC LIMIT %s",
                (count,),
            ).fetchall()
        return [StoredRecord(s, i, k, t, bytes(b), bytes(h)) for s, i, k, t, b, h in reversed(rows)]

    def last_seq_before(self, time: str) -> int:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT max(seq) FROM audit_records WHERE time < %s", (time,)
            ).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def close(self) -> None:
        self._drop()
