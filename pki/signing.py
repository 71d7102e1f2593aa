"""Signing keys behind one interface: a file key for development, the HSM in production.

Used for audit checkpoints and the offline bundle's manifest. ``pki.hsm`` adds ``HsmSigner``
implementing the same protocol, so callers never know where the key lives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from pki.errors import PKIError
from pki.secret import Secret

__all__ = ["FileSigner", "Signer", "SigningKeyError", "verify_ed25519"]


class SigningKeyError(PKIError):
    """A signing key is missing, unreadable or of the wrong kind."""


@runtime_checkable
class Signer(Protocol):
    """Signs bytes. ``algorithm`` is ``"ed25519"`` or ``"ecdsa-p256-sha256"``."""

    @property
    def algorithm(self) -> str: ...

    @property
    def key_id(self) -> str:
        """A short stable name for the key (e.g. a label or a fingerprint prefix)."""
        ...

    def public_key_pem(self) -> bytes: ...

    def sign(self, data: bytes) -> bytes: ...


class FileSigner:
    """An Ed25519 key in a PEM file (PKCS#8, optionally passphrase-encrypted). Development only:
    production keys live in the HSM."""

    algorithm = "ed25519"

    def __init__(self, private_key: ed25519.Ed25519PrivateKey, key_id: str) -> None:
        self._key = private_key
        self._key_id = key_id

    @property
    def key_id(self) -> str:
        return self._key_id

    @classmethod
    def generate(cls, path: Path, *, key_id: str, passphrase: Secret | None = None) -> FileSigner:
        key = ed25519.Ed25519PrivateKey.generate()
        enc: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase.reveal().encode())
            if passphrase
            else serialization.NoEncryption()
        )
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=False)
        path.write_bytes(pem)
        return cls(key, key_id)

    @classmethod
    def load(cls, path: Path, *, key_id: str, passphrase: Secret | None = None) -> FileSigner:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SigningKeyError(f"cannot read signing key {path}: {exc.strerror}") from None
        try:
            key = serialization.load_pem_private_key(
                data, passphrase.reveal().encode() if passphrase else None
            )
        except (ValueError, TypeError) as exc:
            raise SigningKeyError(
                f"signing key {path} could not be loaded ({type(exc).__name__}): "
                "wrong passphrase, or not a PEM private key"
            ) from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise SigningKeyError(f"signing key {path} is not an Ed25519 key")
        return cls(key, key_id)

    def public_key_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


def verify_ed25519(public_key_pem: bytes, signature: bytes, data: bytes) -> bool:
    """True if ``signature`` is a valid Ed25519 signature of ``data`` under the PEM public key."""
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SigningKeyError("public key is not Ed25519")
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True
