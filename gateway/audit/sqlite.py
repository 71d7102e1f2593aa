"""The embedded default store: one SQLite file in WAL mode with ``synchronous=FULL``.

WAL with ``synchronous=FULL`` fsyncs the write-ahead log on every commit, so a record is on disk
when :meth:`SqliteStore.append` returns. Throughput comes from group commit (``_trail``): many
records, one transaction, one fsync. The head is read inside ``BEGIN IMMEDIATE``, which holds
SQLite's write lock, so even two processes sharing the file extend one chain.

A failed write (locked past ``lock_timeout_s``, read-only, disk full, the file removed or
replaced) raises :class:`AuditUnavailable` and drops the connection; the next call reopens the
file without creating it, so a deleted trail is never silently restarted as a new, empty one.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from gateway.audit._chain import Entry, Head, SealedRecord, genesis_hash, seal
from gateway.audit._checkpoint import VerifierKey
from gateway.audit._errors import AuditConfigError, AuditUnavailable
from gateway.audit._records import rfc3339_now
from gateway.audit._store import StoredCheckpoint, StoredRecord

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash BLOB NOT NULL,
    time TEXT NOT NULL);
CREATE TABLE audit_records (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, time TEXT NOT NULL,
    body BLOB NOT NULL, hash BLOB NOT NULL);
CREATE INDEX audit_records_time ON audit_records (time);
CREATE TABLE audit_checkpoints (
    id INTEGER PRIMARY KEY AUTOINCREMENT, size INTEGER NOT NULL, time TEXT NOT NULL,
    note TEXT NOT NULL);
CREATE TABLE audit_keys (
    key_hash BLOB PRIMARY KEY, name TEXT NOT NULL, algorithm TEXT NOT NULL,
    public_key_pem BLOB NOT NULL, added TEXT NOT NULL);
"""


def _bytes(value: object) -> bytes:
    # SQLite keeps whatever type was written: someone editing the file may store TEXT in a BLOB
    # column. Read it as the bytes it stands for, so it is verified rather than crashing.
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")


def _int(value: object) -> int:
    # An edited row may hold any type in an INTEGER column; -1 never equals a signed size.
    try:
        return int(str(value))
    except ValueError:
        return -1


def _record(row: tuple[object, ...]) -> StoredRecord:
    seq, record_id, kind, time, body, hash_ = row
    return StoredRecord(
        int(str(seq)), str(record_id), str(kind), str(time), _bytes(body), _bytes(hash_)
    )


class SqliteStore:
    """See the module docstring. ``create=True`` makes a new trail if the file does not exist;
    ``origin``, when given, must match the trail's."""

    def __init__(
        self,
        path: Path,
        *,
        origin: str | None = None,
        create: bool = False,
        lock_timeout_s: float = 5.0,
        read_only: bool = False,
    ) -> None:
        self._path = Path(path)
        self._read_only = read_only
        self._lock_timeout_s = lock_timeout_s
        self._transactions = 0
        self._conn: sqlite3.Connection | None = None
        self._inode: tuple[int, int] | None = None
        if create and not self._path.exists():
            self._create(origin)
        elif not self._path.exists():
            raise AuditConfigError(f"audit trail {self._path} does not exist; check the path")
        with self._reading() as conn:
            row = conn.execute("SELECT value FROM audit_meta WHERE key = 'origin'").fetchone()
        self._origin: str = row[0]
        if origin is not None and origin != self._origin:
            raise AuditConfigError(
                f"audit trail {self._path} belongs to origin {self._origin!r}, but the config "
                f"says {origin!r}; point audit.path at that origin's file or fix audit.origin"
            )

    @property
    def location(self) -> str:
        return str(self._path)

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def transactions(self) -> int:
        return self._transactions

    # -- connection ---------------------------------------------------------------------------

    def _create(self, origin: str | None) -> None:
        if origin is None:
            raise AuditConfigError(f"cannot create audit trail {self._path} without an origin")
        now = rfc3339_now()
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self._path, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA)
                conn.executemany(
                    "INSERT INTO audit_meta (key, value) VALUES (?, ?)",
                    [("origin", origin), ("created", now), ("format", "bastion-audit-v1")],
                )
                conn.execute(
                    "INSERT INTO audit_head (id, seq, hash, time) VALUES (1, 0, ?, ?)",
                    (genesis_hash(origin), now),
                )
                conn.execute("COMMIT")
            finally:
                conn.close()
        except (sqlite3.Error, OSError) as exc:
            raise self._unavailable("cannot be created", exc) from None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        try:
            # mode=rw: reopening after a failure must never create a fresh, empty trail;
            # mode=ro: SQLite itself refuses every write (replay, verify).
            mode = "ro" if self._read_only else "rw"
            conn = sqlite3.connect(
                f"{self._path.resolve().as_uri()}?mode={mode}",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
                timeout=self._lock_timeout_s,
            )
            if self._read_only:
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                conn.execute("PRAGMA query_only=ON")
            else:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                conn.execute("PRAGMA synchronous=FULL")
            st = os.stat(self._path)
        except (sqlite3.Error, OSError) as exc:
            raise self._unavailable("cannot be opened", exc) from None
        if mode != "wal":
            conn.close()
            raise AuditUnavailable(
                f"audit trail {self._path} cannot use WAL journaling (got {mode!r}); "
                "put it on a local filesystem"
            )
        self._conn, self._inode = conn, (st.st_dev, st.st_ino)
        return conn

    def _drop(self) -> None:
        """Close the connection (SQLite rolls back an open transaction on close)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error as exc:
                # Already failing: the caller reports the first error; this one adds nothing.
                del exc

    def _unavailable(self, what: str, exc: BaseException) -> AuditUnavailable:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return AuditUnavailable(
            f"audit trail {self._path} {what} ({type(exc).__name__}: {detail}); requests are "
            "refused until it can write again: check disk space, permissions and locks"
        )

    def _check_same_file(self) -> None:
        # An open descriptor keeps writing to a deleted or replaced file: records that "succeed"
        # but are not in the trail anyone will read. Refuse instead.
        try:
            st = os.stat(self._path)
        except OSError as exc:
            raise self._unavailable("is gone", exc) from None
        if (st.st_dev, st.st_ino) != self._inode:
            raise AuditUnavailable(
                f"audit trail {self._path} was replaced by another file while open; "
                "restore the original file (requests are refused until then)"
            )

    @contextmanager
    def _writing(self, what: str) -> Iterator[sqlite3.Connection]:
        conn = self._connection()
        try:
            self._check_same_file()
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except AuditUnavailable:
            self._drop()
            raise
        except (sqlite3.Error, OSError) as exc:
            self._drop()
            raise self._unavailable(what, exc) from None
        except BaseException:
            self._drop()  # never leave a transaction open on the shared connection
            raise

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._connection()
        except sqlite3.Error as exc:
            self._drop()
            raise self._unavailable("cannot be read", exc) from None

    # -- writes -------------------------------------------------------------------------------

    def append(self, entries: Sequence[Entry]) -> list[SealedRecord]:
        with self._writing("cannot be written") as conn:
            seq, hash_, time = conn.execute(
                "SELECT seq, hash, time FROM audit_head WHERE id = 1"
            ).fetchone()
            sealed = seal(entries, Head(seq, hash_, time), rfc3339_now())
            conn.executemany(
                "INSERT INTO audit_records (seq, id, kind, time, body, hash) VALUES (?, ?, ?, ?, ?, ?)",
                [(r.seq, r.record_id, r.kind, r.time, r.body, r.hash) for r in sealed],
            )
            last = sealed[-1]
            conn.execute(
                "UPDATE audit_head SET seq = ?, hash = ?, time = ? WHERE id = 1",
                (last.seq, last.hash, last.time),
            )
        self._transactions += 1
        return sealed

    def add_checkpoint(self, size: int, time: str, note: str) -> None:
        with self._writing("cannot store a checkpoint") as conn:
            conn.execute(
                "INSERT INTO audit_checkpoints (size, time, note) VALUES (?, ?, ?)",
                (size, time, note),
            )

    def register_key(self, key: VerifierKey) -> None:
        with self._writing("cannot register the checkpoint key") as conn:
            conn.execute(
                "INSERT OR IGNORE INTO audit_keys (key_hash, name, algorithm, public_key_pem, "
                "added) VALUES (?, ?, ?, ?, ?)",
                (key.key_hash, key.name, key.algorithm, key.public_key_pem, rfc3339_now()),
            )

    def prune(self, through_seq: int, anchor_time: str, anchor_note: str) -> int:
        with self._writing("cannot be pruned") as conn:
            conn.execute(
                "INSERT INTO audit_checkpoints (size, time, note) VALUES (?, ?, ?)",
                (through_seq, anchor_time, anchor_note),
            )
            removed: int = conn.execute(
                "DELETE FROM audit_records WHERE seq <= ?", (through_seq,)
            ).rowcount
            conn.execute("DELETE FROM audit_checkpoints WHERE size < ?", (through_seq,))
        return removed

    # -- reads --------------------------------------------------------------------------------

    def head(self) -> Head:
        with self._reading() as conn:
            seq, hash_, time = conn.execute(
                "SELECT seq, hash, time FROM audit_head WHERE id = 1"
            ).fetchone()
        return Head(seq, hash_, time)

    def checkpoint_notes(self) -> list[str]:
        with self._reading() as conn:
            return [
                str(r[0]) for r in conn.execute("SELECT note FROM audit_checkpoints ORDER BY id")
            ]

    def checkpoints(self) -> list[StoredCheckpoint]:
        with self._reading() as conn:
            rows = conn.execute("SELECT size, time, note FROM audit_checkpoints ORDER BY id")
            # Columns are read as stored (an edit may have put text in ``size``): verify compares.
            return [StoredCheckpoint(_int(size), str(time), str(note)) for size, time, note in rows]

    def keys(self) -> list[VerifierKey]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT name, key_hash, algorithm, public_key_pem FROM audit_keys ORDER BY added"
            ).fetchall()
        return [VerifierKey(n, bytes(h), a, bytes(p)) for n, h, a, p in rows]

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        with self._reading() as conn:
            conn.execute("BEGIN")
            try:
                yield
            finally:
                conn.execute("COMMIT")

    def records(
        self, *, after_seq: int = 0, since: str | None = None, until: str | None = None
    ) -> Iterator[StoredRecord]:
        # "" sorts before and "~" after every RFC 3339 time string.
        args = (after_seq, since or "", until or "~")
        with self._reading() as conn:
            cursor = conn.execute(
                "SELECT seq, id, kind, time, body, hash FROM audit_records "
                "WHERE seq > ? AND time >= ? AND time < ? ORDER BY seq",
                args,
            )
            cursor.arraysize = 4096
            while rows := cursor.fetchmany():
                for row in rows:
                    yield _record(row)

    def last_records(self, count: int) -> list[StoredRecord]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT seq, id, kind, time, body, hash FROM audit_records ORDER BY seq DESC LIMIT ?",
                (count,),
            ).fetchall()
        return [_record(r) for r in reversed(rows)]

    def last_seq_before(self, time: str) -> int:
        with self._reading() as conn:
            row = conn.execute(
                "SELECT max(seq) FROM audit_records WHERE time < ?", (time,)
            ).fetchone()
        return int(row[0] or 0)

    def close(self) -> None:
        self._drop()
