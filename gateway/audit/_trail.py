"""``AuditTrail``: the write-ahead interface the gateway calls, and its group-commit writer.

One writer thread owns the store. Callers put a job on its queue and await a future; the writer
takes every job waiting (at most ``max_batch``, optionally lingering ``max_wait_ms`` for more),
writes them in one transaction with one fsync, and settles each caller's future with its record
id or with :class:`AuditUnavailable`. While one commit is on its way to disk the next batch
gathers, so throughput grows with load and an idle gateway pays one fsync per record. The same
thread signs checkpoints every ``checkpoint_interval_s`` and on close, so blocking store and
signer calls (SQLite, psycopg, PKCS#11) never run on the event loop.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.audit._chain import Entry
from gateway.audit._checkpoint import (
    MAX_MARKS,
    CheckpointFormatError,
    parse_checkpoint,
    sign_checkpoint,
    verifier_key,
)
from gateway.audit._config import AuditConfig
from gateway.audit._errors import AuditUnavailable
from gateway.audit._records import (
    DecisionRecord,
    OutcomeRecord,
    canonical_data,
    new_record_id,
    rfc3339_now,
)
from gateway.audit._store import Store
from pki.errors import BastionError
from pki.signing import Signer

__all__ = ["AuditStats", "AuditTrail", "GroupCommitTrail"]

logger = logging.getLogger("bastion.audit")


@dataclass(frozen=True, slots=True)
class AuditStats:
    """Counters since the trail was opened (``records`` / ``transactions`` is the batching)."""

    records: int
    transactions: int
    failed_transactions: int
    checkpoints: int
    checkpoint_failures: int


class AuditTrail(abc.ABC):
    """Where the gateway writes decisions and outcomes. Appends return only once durable."""

    @abc.abstractmethod
    async def append_decision(self, rec: DecisionRecord) -> str:
        """Write ``rec``; return its record id once it is durable. Raises AuditUnavailable."""

    @abc.abstractmethod
    async def append_outcome(self, rec: OutcomeRecord) -> str:
        """Write ``rec``; return its record id once it is durable. Raises AuditUnavailable."""

    @abc.abstractmethod
    async def append_payload(self, kind: str, data: Mapping[str, object]) -> str:
        """Write a payload-capture record (``payload`` or ``capkey``); return its id."""

    @abc.abstractmethod
    async def checkpoint(self) -> str | None:
        """Sign and store a checkpoint of the log now; return the note (None if empty)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Write what is queued, sign a final checkpoint, close the store."""

    @abc.abstractmethod
    def stats(self) -> AuditStats: ...


@dataclass(slots=True)
class _Job:
    entry: Entry | None  # None: a checkpoint request
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[str | None]


_STOP = None  # queue sentinel
_FOLLOWUP_KINDS = frozenset({"outcome"})


def _only_followups(batch: list[_Job]) -> bool:
    return all(job.entry is not None and job.entry.kind in _FOLLOWUP_KINDS for job in batch)


def _settle(
    future: asyncio.Future[str | None], result: str | None, error: BaseException | None
) -> None:
    if future.done():  # the caller was cancelled; its record is durable all the same
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class GroupCommitTrail(AuditTrail):
    """An :class:`AuditTrail` over any :class:`Store`; see the module docstring."""

    def __init__(self, store: Store, signer: Signer, config: AuditConfig) -> None:
        self._store = store
        self._signer = signer
        self._config = config
        self._key = verifier_key(store.origin, signer.public_key_pem())
        store.register_key(self._key)
        self._checkpointed_size = 0
        notes = store.checkpoint_notes()
        if notes:
            try:
                self._checkpointed_size = parse_checkpoint(notes[-1]).size
            except CheckpointFormatError:
                # `bastion audit verify` reports it; the writer just signs a fresh checkpoint.
                logger.warning("the latest stored audit checkpoint does not parse")
        # (seq, chain hash) of records committed since the last checkpoint, signed with it as
        # marks so verify can name a rewritten record (``_checkpoint``); thinned as it grows.
        self._marks: list[tuple[int, bytes]] = []
        self._mark_stride = 1
        self._next_checkpoint = time.monotonic() + config.checkpoint_interval_s
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._records = 0
        self._failed = 0
        self._checkpoints = 0
        self._checkpoint_failures = 0
        self._thread = threading.Thread(target=self._run, name="bastion-audit-writer", daemon=True)
        self._thread.start()

    @property
    def config(self) -> AuditConfig:
        return self._config

    @property
    def store(self) -> Store:
        return self._store

    # -- the caller's side (event loop) --------------------------------------------------------

    async def append_decision(self, rec: DecisionRecord) -> str:
        data = canonical_data(rec.to_data(), limit=self._config.max_record_bytes)
        return await self._append(Entry(new_record_id("decision"), "decision", data))

    async def append_outcome(self, rec: OutcomeRecord) -> str:
        data = canonical_data(rec.to_data(), limit=self._config.max_record_bytes)
        return await self._append(Entry(new_record_id("outcome"), "outcome", data))

    async def append_payload(self, kind: str, data: Mapping[str, object]) -> str:
        """A ``payload`` or ``capkey`` record (payload capture; larger size limit)."""
        if kind not in ("payload", "capkey"):
            raise ValueError(f"append_payload takes payload or capkey records, not {kind!r}")
        encoded = canonical_data(data, limit=self._config.max_payload_bytes)
        return await self._append(Entry(new_record_id(kind), kind, encoded))

    async def _append(self, entry: Entry) -> str:
        record_id = await self._submit(entry)
        if record_id is None:  # pragma: no cover - the writer always answers an entry with its id
            raise AuditUnavailable("audit writer returned no record id")
        return record_id

    async def checkpoint(self) -> str | None:
        return await self._submit(None)

    async def _submit(self, entry: Entry | None) -> str | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str | None] = loop.create_future()
        with self._lock:
            if self._closed:
                raise AuditUnavailable(
                    f"audit trail {self._store.location} is closed; requests are refused"
                )
            self._queue.put(_Job(entry, loop, future))
        return await future

    async def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    def stats(self) -> AuditStats:
        return AuditStats(
            records=self._records,
            transactions=self._store.transactions,
            failed_transactions=self._failed,
            checkpoints=self._checkpoints,
            checkpoint_failures=self._checkpoint_failures,
        )

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._gather()
            entries = [job for job in batch if job.entry is not None]
            if entries:
                self._commit(entries)
            for job in batch:
                if job.entry is None:
                    self._answer_checkpoint(job)
            if time.monotonic() >= self._next_checkpoint:
                self._checkpoint_quietly("periodic")
        self._checkpoint_quietly("close")
        self._store.close()

    def _gather(self) -> tuple[list[_Job], bool]:
        """Block for the first job (or the next checkpoint), then take what else is waiting."""
        batch: list[_Job] = []
        timeout = max(0.0, self._next_checkpoint - time.monotonic())
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return batch, False
        if first is _STOP:
            return batch, True
        batch.append(first)
        deadline = time.monotonic() + self._config.max_wait_ms / 1000
        # Outcome records are not write-ahead: a batch of only those lingers briefly so that it
        # shares the next decision's transaction and fsync instead of adding one of its own
        # (which the next decision would otherwise queue behind).
        linger_until = time.monotonic() + self._config.outcome_linger_ms / 1000
        while _only_followups(batch) and len(batch) < self._config.max_batch:
            wait = linger_until - time.monotonic()
            if wait <= 0:
                break
            try:
                job = self._queue.get(timeout=wait)
            except queue.Empty:
                break
            if job is _STOP:
                return batch, True
            batch.append(job)
        while len(batch) < self._config.max_batch:
            try:
                wait = deadline - time.monotonic()
                job = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:  # nothing can follow the stop sentinel (see close)
                return batch, True
            batch.append(job)
        return batch, False

    def _commit(self, jobs: list[_Job]) -> None:
        try:
            sealed = self._store.append([job.entry for job in jobs if job.entry is not None])
        except AuditUnavailable as exc:
            self._failed += 1
            logger.warning("audit write failed for %d records: %s", len(jobs), exc)
            self._answer_all(jobs, exc)
            return
        except Exception:  # a writer bug must fail these callers closed, not hang them
            self._failed += 1
            logger.exception("audit writer failed unexpectedly")
            self._answer_all(jobs, AuditUnavailable("audit writer failed; see the gateway log"))
            return
        self._records += len(sealed)
        for record in sealed:
            if record.seq % self._mark_stride == 0:
                self._marks.append((record.seq, record.hash))
        if len(self._marks) > 4 * MAX_MARKS:  # keep every other one: memory stays bounded
            self._marks = self._marks[1::2]
            self._mark_stride *= 2
        for job, record in zip(jobs, sealed, strict=True):
            self._answer(job, record.record_id, None)

    def _answer_all(self, jobs: list[_Job], error: AuditUnavailable) -> None:
        for job in jobs:
            # A fresh exception per caller: one instance raised in many tasks shares a traceback.
            self._answer(job, None, AuditUnavailable(str(error)))

    def _answer(self, job: _Job, result: str | None, error: BaseException | None) -> None:
        try:
            job.loop.call_soon_threadsafe(_settle, job.future, result, error)
        except RuntimeError:
            # The caller's event loop is closed: nobody is waiting for this answer any more.
            logger.debug("audit caller's event loop closed before its answer")

    def _answer_checkpoint(self, job: _Job) -> None:
        try:
            note = self._checkpoint("requested", force=True)
        except (BastionError, OSError) as exc:
            self._checkpoint_failures += 1
            self._answer(job, None, AuditUnavailable(f"checkpoint failed: {exc}"))
            return
        except Exception:  # a signer bug must not kill the writer thread
            self._checkpoint_failures += 1
            logger.exception("audit checkpoint failed unexpectedly")
            self._answer(job, None, AuditUnavailable("checkpoint failed; see the gateway log"))
            return
        self._answer(job, note, None)

    def _checkpoint_quietly(self, reason: str) -> None:
        try:
            self._checkpoint(reason, force=False)
        except (BastionError, OSError) as exc:
            # Records stay durable; they are reported "not yet covered" until the next checkpoint.
            self._checkpoint_failures += 1
            logger.warning("audit checkpoint (%s) failed: %s", reason, exc)
        except Exception:  # a signer bug must not kill the writer thread
            self._checkpoint_failures += 1
            logger.exception("audit checkpoint (%s) failed unexpectedly", reason)

    def _checkpoint(self, reason: str, *, force: bool) -> str | None:
        self._next_checkpoint = time.monotonic() + self._config.checkpoint_interval_s
        head = self._store.head()
        if head.seq == 0 or (head.seq == self._checkpointed_size and not force):
            return None
        now = rfc3339_now()
        note = sign_checkpoint(
            self._signer,
            origin=self._store.origin,
            size=head.seq,
            head=head.hash,
            time=now,
            reason=reason,
            marks=[m for m in self._marks if self._checkpointed_size < m[0] < head.seq],
        )
        self._store.add_checkpoint(head.seq, now, note)
        self._marks, self._mark_stride = [], 1
        self._checkpointed_size = head.seq
        self._checkpoints += 1
        return note
