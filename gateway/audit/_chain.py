"""The hash chain: each record's hash commits to every record before it.

``hash(n) = SHA-256(hash(n-1) || canonical bytes of record n)`` and ``hash(0)`` is a genesis value
bound to the log's origin, so records cannot be transplanted between logs (DESIGN.md, "Audit
trail"). A signed checkpoint ``(size, hash(size), time)`` vouches for the first ``size`` records.

Why a chain and not an RFC 6962 Merkle tree: ``bastion audit verify`` replays the whole trail
anyway (PCI DSS asks for the complete trail, not sampled inclusion proofs); the chain names the
first broken record directly from the stored per-record hashes; the write path keeps one head
``(seq, hash)`` per transaction, which is what serializes several PostgreSQL writers; and a
prune anchor is one signed hash. What a tree would add, logarithmic inclusion and consistency
proofs for auditors who do not hold the store, is not asked for; the record format and the
checkpoint format (C2SP tlog-checkpoint) would not change if it were added later.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.audit._records import envelope

__all__ = ["Entry", "Head", "SealedRecord", "genesis_hash", "link", "seal"]


def genesis_hash(origin: str) -> bytes:
    """``hash(0)`` of the log named ``origin``."""
    return hashlib.sha256(b"bastion-audit-v1 genesis\n" + origin.encode("utf-8")).digest()


def link(prev: bytes, body: bytes) -> bytes:
    return hashlib.sha256(prev + body).digest()


@dataclass(frozen=True, slots=True)
class Head:
    """The last committed record: its seq (0 for an empty log), hash and time."""

    seq: int
    hash: bytes
    time: str


@dataclass(frozen=True, slots=True)
class Entry:
    """A record waiting to be written: its id, kind and canonical data (no seq or time yet)."""

    record_id: str
    kind: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SealedRecord:
    seq: int
    record_id: str
    kind: str
    time: str
    body: bytes
    hash: bytes


def seal(entries: Sequence[Entry], head: Head, now: str) -> list[SealedRecord]:
    """Give ``entries`` the next seqs after ``head`` and chain them on. ``time`` never runs
    backwards along the log (a replica with a slow clock takes the head's time), so a time
    range is a seq range."""
    time = max(now, head.time)
    prev, seq = head.hash, head.seq
    out: list[SealedRecord] = []
    for entry in entries:
        seq += 1
        body = envelope(entry.data, record_id=entry.record_id, kind=entry.kind, seq=seq, time=time)
        prev = link(prev, body)
        out.append(SealedRecord(seq, entry.record_id, entry.kind, time, body, prev))
    return out
