"""Signed checkpoints in the C2SP tlog-checkpoint / signed-note text format.

A checkpoint is a signed note (https://c2sp.org/signed-note) whose text is a tlog-checkpoint
(https://c2sp.org/tlog-checkpoint)::

    bastion.local/audit              origin (also the signing key's name)
    1024                             size: records covered
    q0d2…=                           base64 chain hash of record ``size`` (see ``_chain``)
    time 2025-01-02T03:04:05.000006Z extension lines: when it was signed, and why,
    reason periodic
    mark 1000 Zm9v…=                 and marks: the chain hash at records before ``size``
                                     blank line
    — bastion.local/audit AbCd…      em dash, key name, base64(4-byte key id || signature)

Marks (at most :data:`MAX_MARKS`) let ``verify`` name the record of a rewrite whose later hashes
were recomputed: the chain up to a mark is vouched for by the signature, so the change lies after
the last mark that matches and at or before the first that does not. The writer marks every record
it commits while there are few since the last checkpoint, thinning evenly as there are more.

Ed25519 keys use signature type 0x01 and key id ``SHA-256(name || 0x0A || 0x01 || key)[:4]``;
ECDSA P-256 keys (an HSM may hold one) type 0x02, key id ``SHA-256(DER SubjectPublicKeyInfo)[:4]``
and an ASN.1 DER signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from gateway.audit._errors import AuditConfigError, AuditIntegrityError
from pki.signing import Signer

__all__ = [
    "MAX_MARKS",
    "Checkpoint",
    "CheckpointFormatError",
    "VerifierKey",
    "key_fingerprint",
    "parse_checkpoint",
    "sign_checkpoint",
    "verifier_key",
]

_DASH = "\u2014 "
MAX_MARKS = 64


class CheckpointFormatError(AuditIntegrityError):
    """A checkpoint note that does not parse."""


@dataclass(frozen=True, slots=True)
class VerifierKey:
    name: str
    key_hash: bytes  # the 4-byte signed-note key id
    algorithm: str
    public_key_pem: bytes

    @property
    def key_id_hex(self) -> str:
        return self.key_hash.hex()

    @property
    def fingerprint(self) -> str:
        """``SHA256:<base64>`` of the DER SubjectPublicKeyInfo (as ``ssh-keygen -l`` prints
        keys): what an auditor compares out of band."""
        return key_fingerprint(self.public_key_pem)

    def verify(self, signature: bytes, message: bytes) -> bool:
        key = serialization.load_pem_public_key(self.public_key_pem)
        try:
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature, message)
            elif isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            else:
                return False
        except InvalidSignature:
            return False
        return True


def key_fingerprint(public_key_pem: bytes) -> str:
    """``SHA256:<unpadded base64 of SHA-256(DER SubjectPublicKeyInfo)>`` of a PEM public key."""
    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except ValueError:
        raise AuditConfigError(
            "not a PEM public key; export it with `bastion audit pubkey`"
        ) from None
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "SHA256:" + base64.b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


def verifier_key(name: str, public_key_pem: bytes) -> VerifierKey:
    """The signed-note verifier for a public key (PEM SubjectPublicKeyInfo)."""
    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except ValueError:
        raise AuditConfigError(
            "checkpoint public key is not a PEM public key; export it with `bastion audit pubkey`"
        ) from None
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        key_hash = hashlib.sha256(name.encode() + b"\n\x01" + raw).digest()[:4]
        return VerifierKey(name, key_hash, "ed25519", public_key_pem)
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        der = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return VerifierKey(
            name, hashlib.sha256(der).digest()[:4], "ecdsa-p256-sha256", public_key_pem
        )
    raise AuditConfigError(
        f"checkpoint key of type {type(key).__name__} is not supported; use Ed25519 or ECDSA P-256"
    )


@dataclass(frozen=True, slots=True)
class Checkpoint:
    origin: str
    size: int
    head: bytes
    time: str
    reason: str
    key_name: str
    key_hash: bytes
    signature: bytes
    text: bytes  # the signed text (the note up to and including its last text newline)
    note: str  # the whole note as stored
    marks: tuple[tuple[int, bytes], ...] = ()  # (seq, chain hash) signed with the checkpoint

    def verify(self, key: VerifierKey) -> bool:
        return (
            key.name == self.key_name
            and key.key_hash == self.key_hash
            and key.verify(self.signature, self.text)
        )


def checkpoint_text(
    *,
    origin: str,
    size: int,
    head: bytes,
    time: str,
    reason: str,
    marks: Sequence[tuple[int, bytes]] = (),
) -> str:
    lines = [origin, str(size), base64.b64encode(head).decode(), f"time {time}", f"reason {reason}"]
    lines += [f"mark {seq} {base64.b64encode(h).decode()}" for seq, h in marks if 0 < seq < size]
    return "\n".join(lines) + "\n"


def sign_checkpoint(
    signer: Signer,
    *,
    origin: str,
    size: int,
    head: bytes,
    time: str,
    reason: str,
    marks: Sequence[tuple[int, bytes]] = (),
) -> str:
    """A signed checkpoint note for the first ``size`` records, whose chain hash is ``head``;
    ``marks`` are (seq, chain hash) of earlier records (at most :data:`MAX_MARKS` are kept)."""
    marks = _thin(sorted(marks), MAX_MARKS)
    text = checkpoint_text(
        origin=origin, size=size, head=head, time=time, reason=reason, marks=marks
    )
    key = verifier_key(origin, signer.public_key_pem())
    signature = signer.sign(text.encode())
    if key.algorithm == "ecdsa-p256-sha256" and len(signature) == 64:
        # PKCS#11 returns r || s; signed notes carry the ASN.1 DER form.
        signature = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
    blob = base64.b64encode(key.key_hash + signature).decode()
    return f"{text}\n{_DASH}{origin} {blob}\n"


def _thin(marks: Sequence[tuple[int, bytes]], limit: int) -> list[tuple[int, bytes]]:
    """At most ``limit`` of ``marks``, evenly spread, the last one kept."""
    if len(marks) <= limit:
        return list(marks)
    step = len(marks) / limit
    return [marks[min(len(marks) - 1, round((i + 1) * step) - 1)] for i in range(limit)]


def parse_checkpoint(note: str) -> Checkpoint:
    """Parse a checkpoint note (the signature is checked by :meth:`Checkpoint.verify`)."""
    cut = note.rfind("\n\n")
    if cut < 0:
        raise CheckpointFormatError("no blank line between text and signature")
    text, sigs = note[: cut + 1], note[cut + 2 :]
    lines = text.split("\n")[:-1]
    if len(lines) < 3:
        raise CheckpointFormatError("fewer than three text lines")
    origin, size_text, head_text = lines[0], lines[1], lines[2]
    extensions = dict(
        line.partition(" ")[::2] for line in lines[3:] if not line.startswith("mark ")
    )
    marks: list[tuple[int, bytes]] = []
    for line in lines[3:]:
        if line.startswith("mark "):
            parts = line.split(" ")
            if len(parts) != 3:
                raise CheckpointFormatError("a mark line is not well formed")
            try:
                mark = (int(parts[1]), base64.b64decode(parts[2], validate=True))
            except (ValueError, binascii.Error):
                raise CheckpointFormatError("a mark line is not well formed") from None
            if len(mark[1]) != 32 or mark[0] <= 0:
                raise CheckpointFormatError("a mark line is out of range")
            marks.append(mark)
    sig_lines = [s for s in sigs.split("\n") if s]
    if not sig_lines or not sig_lines[0].startswith(_DASH):
        raise CheckpointFormatError("no signature line")
    name, _, blob_text = sig_lines[0][len(_DASH) :].partition(" ")
    try:
        size = int(size_text)
        head = base64.b64decode(head_text, validate=True)
        blob = base64.b64decode(blob_text, validate=True)
    except (ValueError, binascii.Error):
        raise CheckpointFormatError("size, hash or signature is not well formed") from None
    if size < 0 or len(head) != 32 or len(blob) < 5:
        raise CheckpointFormatError("size, hash or signature is out of range")
    return Checkpoint(
        origin=origin,
        size=size,
        head=head,
        time=extensions.get("time", ""),
        reason=extensions.get("reason", ""),
        key_name=name,
        key_hash=blob[:4],
        signature=blob[4:],
        text=text.encode(),
        note=note,
        marks=tuple(sorted(marks)),
    )
