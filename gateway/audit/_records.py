"""What a record holds, and its canonical bytes.

A stored record is one RFC 8785 (JSON Canonicalization Scheme) object::

    {"data":{...caller's fields...},"id":"dec_…","kind":"decision","seq":7,
     "time":"2025-01-02T03:04:05.000006Z","v":1}

The caller's fields are canonicalized with ``rfc8785`` when the record is submitted (so a bad
value fails that one call, not the whole group commit); the store wraps them in the envelope
once it has assigned ``seq`` and ``time``. The envelope's keys are ASCII and sorted and its values
are ASCII tokens and integers, so splicing canonical parts gives the canonical whole (RFC 8785
§3.2.3: members are serialized in key order, values by their own canonical form).

Texts appear only as keyed digests (:func:`text_digest`): a plain hash of a short SSN is reversed
by trying every SSN, an HMAC under a secret key is not.

A decision record also carries the decision's inputs (``inputs``), so that ``bastion policy
replay`` can re-decide it under a candidate policy: per entity type the count and the highest
score, and for each header the live policy reads a keyed digest of its value (:func:`header_digest`,
``null`` when the request had none). Identity, model alias and endpoint are the record's own
fields. Never text: a header value may be personal, so only its digest is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, cast

import rfc8785

from gateway.audit._errors import AuditRecordError
from pki.secret import Secret

__all__ = [
    "DecisionInputs",
    "DecisionRecord",
    "OutcomeRecord",
    "envelope",
    "header_digest",
    "new_record_id",
    "parse_envelope_tail",
    "rfc3339_now",
    "text_digest",
]

FORMAT_VERSION = 1
DIGEST_LABEL = "hmac-sha256:"


@dataclass(frozen=True, slots=True)
class DecisionInputs:
    """What the policy decided on, without text: entity type -> (count, highest score), and
    header name -> :func:`header_digest` of its value (None: the request did not carry it)."""

    entities: Mapping[str, tuple[int, float]] = field(default_factory=lambda: MappingProxyType({}))
    headers: Mapping[str, str | None] = field(default_factory=lambda: MappingProxyType({}))
    # The detection threshold findings were kept at (detection drops those below it): a
    # candidate with a lower threshold cannot be replayed from these findings.
    threshold: float | None = None

    def to_data(self) -> dict[str, object]:
        for digest in self.headers.values():
            if digest is not None and not digest.startswith(DIGEST_LABEL):
                raise AuditRecordError(
                    f"decision inputs hold a header value not labelled {DIGEST_LABEL!r}; "
                    "pass header_digest(key, name, value), never the value"
                )
        entities: dict[str, object] = {}
        for entity_type, (count, score) in self.entities.items():
            if not math.isfinite(score):
                raise AuditRecordError(f"entity {entity_type} has a non-finite score")
            # The score exactly as the engine compared it: RFC 8785 writes the shortest form
            # that reads back as the same double, so replay decides on the same number.
            entities[str(entity_type)] = {"count": int(count), "max_score": float(score)}
        data: dict[str, object] = {
            "v": 1,
            "entities": entities,
            "headers": {str(k): v for k, v in self.headers.items()},
        }
        if self.threshold is not None:
            if not math.isfinite(self.threshold):
                raise AuditRecordError("decision inputs hold a non-finite threshold")
            data["threshold"] = float(self.threshold)
        return data


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """A routing decision, written before any byte goes upstream. No raw text, ever."""

    identity: str
    client_addr: str
    endpoint: str
    model: str
    request_id: str  # opaque, from the gateway
    entities: Mapping[str, int]  # entity type -> count
    rule_id: str
    action: str
    route: str | None
    policy_version: str
    operations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    upstream: str | None = None
    text_digests: tuple[str, ...] = ()  # text_digest() of each text the request carried
    inputs: DecisionInputs | None = None  # for `bastion policy replay`; None: not recorded

    def to_data(self) -> dict[str, object]:
        for digest in self.text_digests:
            if not digest.startswith(DIGEST_LABEL):
                # A value that is not a digest may be the text itself: refuse to store it.
                raise AuditRecordError(
                    f"text_digests holds a value that is not labelled {DIGEST_LABEL!r}; "
                    "pass text_digest(key, text), never the text"
                )
        data: dict[str, object] = {
            "identity": self.identity,
            "client_addr": self.client_addr,
            "endpoint": self.endpoint,
            "model": self.model,
            "request_id": self.request_id,
            "entities": {str(k): int(v) for k, v in self.entities.items()},
            "rule_id": self.rule_id,
            "action": str(self.action),
            "route": self.route,
            "policy_version": self.policy_version,
            "operations": {str(k): str(v) for k, v in self.operations.items()},
            "upstream": self.upstream,
            "text_digests": list(self.text_digests),
        }
        if self.inputs is not None:
            data["inputs"] = self.inputs.to_data()
        return data


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """What happened to a decided request: status, latency, upstream, tokens, error class."""

    decision_id: str
    status: int
    latency_ms: float
    upstream: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error_class: str | None = None

    def to_data(self) -> dict[str, object]:
        if not math.isfinite(self.latency_ms):
            raise AuditRecordError(
                f"outcome latency_ms must be a finite number, got {self.latency_ms!r}"
            )
        return {
            "decision_id": self.decision_id,
            "status": int(self.status),
            # Microsecond precision; rounding keeps the canonical number short and stable.
            "latency_ms": round(float(self.latency_ms), 3),
            "upstream": self.upstream,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "error_class": self.error_class,
        }


def text_digest(key: Secret, text: str) -> str:
    """Keyed digest of a text for the audit trail: ``hmac-sha256:<hex>``."""
    mac = hmac.new(key.reveal().encode(), text.encode("utf-8", "surrogatepass"), hashlib.sha256)
    return DIGEST_LABEL + mac.hexdigest()


def header_digest(key: Secret, name: str, value: str) -> str:
    """Keyed digest of a request header's value, bound to its (lower-case) name, so it cannot
    be compared with a text digest or another header's."""
    return text_digest(key, f"header\x00{name.lower()}\x00{value}")


def canonical_data(data: Mapping[str, object], *, limit: int) -> bytes:
    """RFC 8785 bytes of a record's data; :class:`AuditRecordError` if it cannot be encoded."""
    try:
        encoded: bytes = rfc8785.dumps(cast(Any, data))
    except (rfc8785.CanonicalizationError, ValueError, TypeError) as exc:
        raise AuditRecordError(
            f"audit record cannot be canonically encoded ({type(exc).__name__}); "
            "fields must be strings, integers, finite numbers, lists or string-keyed maps"
        ) from None
    if len(encoded) > limit:
        raise AuditRecordError(
            f"audit record is {len(encoded)} bytes, over audit.max_record_bytes={limit}; "
            "raise the limit or record fewer digests"
        )
    return encoded


_ID_PREFIX = {
    "decision": "dec",
    "outcome": "out",
    "prune": "prn",
    "payload": "pay",
    "capkey": "key",
}


def new_record_id(kind: str) -> str:
    """An opaque, unguessable record id (``dec_`` + 24 hex digits for decisions)."""
    return f"{_ID_PREFIX[kind]}_{secrets.token_hex(12)}"


def rfc3339_now() -> str:
    """UTC now, RFC 3339 with microseconds; fixed width, so strings order like times."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def envelope(data: bytes, *, record_id: str, kind: str, seq: int, time: str) -> bytes:
    """The stored record's canonical bytes: ``data`` (already canonical) in its envelope."""
    return b"".join(
        (
            b'{"data":',
            data,
            b',"id":"',
            record_id.encode("ascii"),
            b'","kind":"',
            kind.encode("ascii"),
            b'","seq":',
            str(seq).encode("ascii"),
            b',"time":"',
            time.encode("ascii"),
            b'","v":%d}' % FORMAT_VERSION,
        )
    )


_TAIL = re.compile(
    rb',"id":"([A-Za-z0-9_]+)","kind":"([a-z]+)","seq":([0-9]+),"time":"([0-9TZ:.-]+)","v":1}'
)


def parse_envelope_tail(body: bytes) -> tuple[str, str, int, str] | None:
    """``(id, kind, seq, time)`` from a stored record's envelope, or None if it has none.

    The envelope follows the data object, and nothing after ``,"id":"`` can contain that
    sequence again (ids, kinds and times are plain tokens), so the last occurrence is it.
    """
    at = body.rfind(b',"id":"')
    if at < 0:
        return None
    match = _TAIL.fullmatch(body, at)
    if match is None:
        return None
    return (
        match.group(1).decode(),
        match.group(2).decode(),
        int(match.group(3)),
        match.group(4).decode(),
    )
