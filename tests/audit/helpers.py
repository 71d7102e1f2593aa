"""Reusable checks on an audit trail, for the audit tests and the gateway's autouse fixtures.

``assert_trail_verifies(target)`` replays the trail and fails the test with the verifier's own
report if anything was altered (or, unless allowed, not yet covered by a signed checkpoint).
``assert_no_text_in_trail(target, texts)`` proves that none of the given texts (prompts, PII
values) reached the store, by searching the raw bytes of the SQLite files (main, WAL, shared
memory) or every row of a PostgreSQL store. ``hold_write_lock(path)`` holds SQLite's write lock
so a test can make the store unwritable on purpose, whoever runs the tests (root included).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gateway.audit import (
    AuditConfig,
    DecisionRecord,
    GroupCommitTrail,
    Store,
    VerifyReport,
    open_store,
)
from gateway.audit import verify_store as _verify_store

__all__ = [
    "assert_no_text_in_trail",
    "assert_trail_verifies",
    "hold_write_lock",
    "sample_decision",
]

Target = Path | str | AuditConfig | GroupCommitTrail | Store


@contextmanager
def _store_of(target: Target) -> Iterator[Store]:
    config: AuditConfig
    if isinstance(target, GroupCommitTrail):
        config = target.config
    elif isinstance(target, AuditConfig):
        config = target
    elif isinstance(target, Path | str):
        config = AuditConfig(backend="sqlite", path=Path(target))
    else:
        yield target
        return
    store = open_store(config)
    try:
        yield store
    finally:
        store.close()


def assert_trail_verifies(
    target: Target,
    *,
    public_keys: Iterable[bytes] | None = None,
    pinned: str | None = None,
    allow_uncovered: bool = False,
) -> VerifyReport:
    """Fail unless the trail verifies (and is fully covered, unless ``allow_uncovered``)."""
    with _store_of(target) as store:
        keys = list(public_keys) if public_keys is not None else None
        report = _verify_store(
            store, public_keys=keys, trust_stored_keys=keys is None, pinned=pinned
        )
    assert report.ok, report.summary()
    if not allow_uncovered:
        assert report.uncovered == 0, report.summary()
    return report


def _needles(text: str) -> list[bytes]:
    escaped = json.dumps(text, ensure_ascii=True)[1:-1].encode()
    return sorted({text.encode("utf-8"), escaped})


def assert_no_text_in_trail(target: Target, texts: Iterable[str]) -> None:
    """Fail if any of ``texts`` (raw or JSON-escaped) occurs anywhere in the store."""
    texts = [t for t in texts if t]
    sqlite_path: Path | None = None
    if isinstance(target, Path | str):
        sqlite_path = Path(target)
    elif isinstance(target, GroupCommitTrail | AuditConfig):
        config = target.config if isinstance(target, GroupCommitTrail) else target
        sqlite_path = config.path if config.backend == "sqlite" else None
    if sqlite_path is not None:
        for suffix in ("", "-wal", "-shm"):
            file = Path(f"{sqlite_path}{suffix}")
            if not file.exists():
                continue
            data = file.read_bytes()
            for text in texts:
                for needle in _needles(text):
                    assert needle not in data, f"a given text occurs in {file.name}"
        return
    with _store_of(target) as store:
        blobs = [rec.body for rec in store.records()]
        blobs += [note.encode() for note in store.checkpoint_notes()]
    for text in texts:
        for needle in _needles(text):
            assert not any(needle in blob for blob in blobs), "a given text occurs in the store"


@contextmanager
def hold_write_lock(path: Path) -> Iterator[None]:
    """Hold the SQLite trail's write lock: appends fail with AuditUnavailable until released."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def sample_decision(n: int = 0, **changes: Any) -> DecisionRecord:
    """A plausible decision record; ``n`` varies the request id."""
    fields: dict[str, Any] = {
        "identity": "spiffe://bastion.test/billing",
        "client_addr": "127.0.0.1:50000",
        "endpoint": "/v1/chat/completions",
        "model": "assistant",
        "request_id": f"req-{n}",
        "entities": {"US_SSN": 1, "PERSON": 2},
        "rule_id": "pii-onprem",
        "action": "onprem",
        "route": "onprem-gpu",
        "policy_version": "sha256:" + "ab" * 32,
        "operations": {"US_SSN": "redact"},
        "upstream": "worker-1",
        "text_digests": ("hmac-sha256:" + "cd" * 32,),
    }
    fields.update(changes)
    return DecisionRecord(**fields)
