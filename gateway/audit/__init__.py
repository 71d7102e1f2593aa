"""The tamper-evident, write-ahead audit trail (issue #5).

Every decision is durable before a byte leaves for an upstream, and its outcome follows. Records
are RFC 8785 canonical JSON, hash-chained (``_chain`` says why a chain), with C2SP
tlog-checkpoint notes signed periodically and on close by a :class:`pki.signing.Signer`.
``bastion audit verify`` (``verify_store``) checks the signatures against pinned keys (never only
the keys stored in the trail), checks every unsigned copy of a signed value, and names the first
record altered, removed, reordered or inserted. Decision records carry the decision's inputs
(``DecisionInputs``) for ``bastion policy replay``. Stores: SQLite (default, ``sqlite.py``) and PostgreSQL for replicas
(``postgres.py``), both behind :class:`Store`.

Errors (``_errors``)::

    BastionError
     └── AuditError
          ├── AuditConfigError
          ├── AuditRecordError
          ├── AuditUnavailable      refuse the request with 503; the next append retries
          └── AuditIntegrityError
               └── CheckpointFormatError
"""

from __future__ import annotations

from gateway.audit._checkpoint import (
    Checkpoint,
    CheckpointFormatError,
    parse_checkpoint,
    verifier_key,
)
from gateway.audit._config import AuditConfig, load_digest_key
from gateway.audit._errors import (
    AuditConfigError,
    AuditError,
    AuditIntegrityError,
    AuditRecordError,
    AuditUnavailable,
)
from gateway.audit._prune import PruneResult, prune_store
from gateway.audit._records import (
    DecisionInputs,
    DecisionRecord,
    OutcomeRecord,
    header_digest,
    text_digest,
)
from gateway.audit._store import Store, StoredRecord
from gateway.audit._trail import AuditStats, AuditTrail, GroupCommitTrail
from gateway.audit._verify import Problem, VerifyReport, verify_store
from pki.signing import Signer

__all__ = [
    "AuditConfig",
    "AuditConfigError",
    "AuditError",
    "AuditIntegrityError",
    "AuditRecordError",
    "AuditStats",
    "AuditTrail",
    "AuditUnavailable",
    "Checkpoint",
    "CheckpointFormatError",
    "DecisionInputs",
    "DecisionRecord",
    "GroupCommitTrail",
    "OutcomeRecord",
    "Problem",
    "PruneResult",
    "Store",
    "StoredRecord",
    "VerifyReport",
    "header_digest",
    "load_digest_key",
    "open_audit_trail",
    "open_store",
    "parse_checkpoint",
    "prune_store",
    "text_digest",
    "verifier_key",
    "verify_store",
]


def open_store(config: AuditConfig, *, create: bool = False, read_only: bool = False) -> Store:
    """Open the store ``config`` names (blocking; for the trail's writer or a CLI command).
    ``read_only`` opens it so that nothing can be written through it (replay, verify)."""
    if config.backend == "postgres":
        from gateway.audit.postgres import PostgresStore

        if config.dsn is None:  # pragma: no cover - AuditConfig's validator requires it
            raise AuditConfigError("audit.dsn is not set")
        return PostgresStore(
            config.dsn,
            origin=config.origin if create else None,
            create=create,
            lock_timeout_s=config.lock_timeout_s,
            read_only=read_only,
        )
    from gateway.audit.sqlite import SqliteStore

    if config.path is None:  # pragma: no cover - AuditConfig's validator requires it
        raise AuditConfigError("audit.path is not set")
    return SqliteStore(
        config.path,
        origin=config.origin if create else None,
        create=create,
        lock_timeout_s=config.lock_timeout_s,
        read_only=read_only,
    )


def open_audit_trail(config: AuditConfig, signer: Signer) -> AuditTrail:
    """Open (creating if needed) the trail and start its writer. Blocks briefly: call it at
    start-up; raises :class:`AuditUnavailable` if the store cannot be reached."""
    store = open_store(config, create=True)
    try:
        return GroupCommitTrail(store, signer, config)
    except BaseException:
        store.close()
        raise
