"""Opt-in payload capture for e-discovery, envelope-encrypted under the HSM.

With ``audit.capture_payloads: true`` the gateway writes, next to each decision, a ``payload``
record holding the request body (and, for non-streamed answers, the restored answer) encrypted
with AES-256-GCM under a data key. The data key is generated when the gateway starts, encrypted
by the HSM's KEK (it never exists in plaintext outside process memory) and written once into the
trail as a ``capkey`` record. Both record kinds sit in the hash chain, so ``bastion audit verify``
covers them like any other record. The associated data binds each ciphertext to its key id,
decision id and part, so a payload cannot be moved to another decision.

Reading a payload back needs the same HSM (``bastion audit payload DECISION_ID``): a copy of the
database alone reveals nothing but sizes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.audit._errors import AuditError
from pki.hsm import HsmSession
from pki.hsm._session import WrappedKey

__all__ = ["CaptureError", "PayloadSealer", "open_payloads"]

_KEY_AAD = b"bastion-audit-capture-v1"
Part = Literal["request", "response"]


class CaptureError(AuditError):
    """A captured payload cannot be sealed or opened (wrong HSM, tampered record)."""


def _aad(key_id: str, decision_id: str, part: str) -> bytes:
    return f"{key_id}|{decision_id}|{part}".encode()


@dataclass(frozen=True, slots=True)
class SealedPayload:
    decision_id: str
    part: str
    key_id: str
    nonce: bytes
    ciphertext: bytes

    def to_data(self) -> dict[str, object]:
        return {
            "decision_id": self.decision_id,
            "part": self.part,
            "alg": "AES-256-GCM",
            "key_id": self.key_id,
            "nonce": self.nonce.hex(),
            "ciphertext": base64.b64encode(self.ciphertext).decode("ascii"),
        }


class PayloadSealer:
    """One data key per gateway start, wrapped by the HSM's KEK."""

    def __init__(self, session: HsmSession) -> None:
        key = bytearray(os.urandom(32))
        wrapped = session.wrap_data_key(key, aad=_KEY_AAD)
        self._aead = AESGCM(bytes(key))
        key[:] = bytes(len(key))
        self._wrapped = wrapped
        self.key_id = hashlib.sha256(wrapped.blob).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"PayloadSealer(key_id={self.key_id!r})"

    def key_record(self) -> dict[str, object]:
        return {"key_id": self.key_id, "wrapped": self._wrapped.to_json()}

    def seal(self, decision_id: str, part: Part, payload: Mapping[str, Any]) -> SealedPayload:
        plaintext = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        nonce = os.urandom(12)
        ciphertext = self._aead.encrypt(nonce, plaintext, _aad(self.key_id, decision_id, part))
        return SealedPayload(decision_id, part, self.key_id, nonce, ciphertext)


def open_payloads(
    session: HsmSession,
    key_records: Iterable[Mapping[str, Any]],
    payload_records: Iterable[Mapping[str, Any]],
) -> list[tuple[str, dict[str, Any]]]:
    """Decrypt payload records with the data keys from ``capkey`` records (via the HSM).
    Returns ``[(part, payload), ...]``. Raises :class:`CaptureError` on any mismatch."""
    keys: dict[str, AESGCM] = {}
    for record in key_records:
        try:
            wrapped = WrappedKey.from_json(record["wrapped"])
        except (KeyError, ValueError) as exc:
            raise CaptureError(f"capture key record is malformed ({type(exc).__name__})") from None
        key = session.unwrap_data_key_plaintext(wrapped, aad=_KEY_AAD)
        keys[str(record["key_id"])] = AESGCM(bytes(key))
        key[:] = bytes(len(key))
    out = []
    for record in payload_records:
        key_id = str(record.get("key_id"))
        aead = keys.get(key_id)
        if aead is None:
            raise CaptureError(f"no capture key {key_id} in the trail for this payload")
        try:
            plaintext = aead.decrypt(
                bytes.fromhex(str(record["nonce"])),
                base64.b64decode(str(record["ciphertext"])),
                _aad(key_id, str(record["decision_id"]), str(record["part"])),
            )
        except (InvalidTag, KeyError, ValueError) as exc:
            raise CaptureError(
                f"payload of decision {record.get('decision_id')} does not decrypt "
                f"({type(exc).__name__}): tampered record or another HSM"
            ) from None
        out.append((str(record["part"]), json.loads(plaintext)))
    return out
