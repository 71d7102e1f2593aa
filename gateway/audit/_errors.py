"""The audit package's exception tree.

    BastionError (pki.errors)
     └── AuditError               anything the audit trail refuses or cannot do
          ├── AuditConfigError    the ``audit:`` config or the store's identity is wrong
          ├── AuditRecordError    a record the caller built cannot be encoded (NaN, too large)
          ├── AuditUnavailable    the store cannot durably write now: refuse the request (503)
          └── AuditIntegrityError ``verify`` found the trail altered, or prune would cut an
               │                  unverifiable prefix
               └── CheckpointFormatError  a checkpoint note that does not parse (``_checkpoint``)

Outside errors (``sqlite3.Error``, ``psycopg.Error``, ``OSError``) are translated where the store
touches them, in ``sqlite.py`` and ``postgres.py``. Messages name the store, the value or limit and
the fix; they never carry record contents beyond seq numbers and record ids.
"""

from __future__ import annotations

from pki.errors import BastionError

__all__ = [
    "AuditConfigError",
    "AuditError",
    "AuditIntegrityError",
    "AuditRecordError",
    "AuditUnavailable",
]


class AuditError(BastionError):
    """The audit trail refused or could not do what was asked."""


class AuditConfigError(AuditError):
    """The audit configuration, or the store it points at, is not usable as configured."""


class AuditRecordError(AuditError):
    """A record cannot be encoded canonically (a NaN latency, a record over the size limit)."""


class AuditUnavailable(AuditError):
    """The store cannot durably write right now. The caller refuses the request (503); the
    next append tries again, so service resumes by itself when the store is back."""


class AuditIntegrityError(AuditError):
    """The trail does not verify."""
