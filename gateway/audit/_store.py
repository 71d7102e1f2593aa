"""The storage contract both backends implement (``sqlite.py``, ``postgres.py``).

A store is blocking and used by one thread at a time: the trail's writer thread, or a CLI
command. It knows rows, transactions and durability; chaining, signing and verifying live in
``_chain``, ``_checkpoint`` and ``_verify`` and are the same for every backend.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import NamedTuple, Protocol

from gateway.audit._chain import Entry, Head, SealedRecord
from gateway.audit._checkpoint import VerifierKey

__all__ = ["Store", "StoredCheckpoint", "StoredRecord"]


class StoredRecord(NamedTuple):
    seq: int
    record_id: str
    kind: str
    time: str
    body: bytes
    hash: bytes


class StoredCheckpoint(NamedTuple):
    """A checkpoint row. ``size`` and ``time`` are unsigned copies of what the signed ``note``
    says (``prune`` reads ``size``): ``verify`` checks they agree with it."""

    size: int
    time: str
    note: str


class Store(Protocol):
    @property
    def location(self) -> str:
        """Where the store is, for messages (a path, or host/database: never a password)."""
        ...

    @property
    def origin(self) -> str: ...

    @property
    def transactions(self) -> int:
        """Append transactions committed by this instance (group commit makes it < records)."""
        ...

    def append(self, entries: Sequence[Entry]) -> list[SealedRecord]:
        """Seal and write ``entries`` in ONE transaction, durable on return, or raise
        :class:`AuditUnavailable` with nothing written."""
        ...

    def head(self) -> Head: ...

    def add_checkpoint(self, size: int, time: str, note: str) -> None: ...

    def checkpoint_notes(self) -> list[str]:
        """Every stored checkpoint note, oldest first."""
        ...

    def checkpoints(self) -> list[StoredCheckpoint]:
        """Every stored checkpoint row (size and time columns with the note), oldest first."""
        ...

    def register_key(self, key: VerifierKey) -> None: ...

    def keys(self) -> list[VerifierKey]: ...

    def snapshot(self) -> AbstractContextManager[None]:
        """A read transaction: reads inside it see one consistent state of the log."""
        ...

    def records(
        self, *, after_seq: int = 0, since: str | None = None, until: str | None = None
    ) -> Iterator[StoredRecord]:
        """Records in seq order: ``seq > after_seq``, ``since <= time < until``."""
        ...

    def last_records(self, count: int) -> list[StoredRecord]: ...

    def last_seq_before(self, time: str) -> int:
        """The highest seq whose time is before ``time`` (0 if none)."""
        ...

    def prune(self, through_seq: int, anchor_time: str, anchor_note: str) -> int:
        """In one transaction: store the signed anchor at ``through_seq``, delete the records up
        to it and the checkpoints below it. Returns the number of records deleted."""
        ...

    def close(self) -> None: ...
