"""The CA's signing key behind one interface (:class:`CASigner`), and the file-key flavour.

:class:`FileCASigner` keeps the key in a PKCS#8 file encrypted with the operator's passphrase;
``pki.hsm.HsmCASigner`` keeps it on the HSM token. ``pki.ca`` signs through either the same way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pki.errors import CANotFoundError, PassphraseError
from pki.secret import Secret

__all__ = ["CASigner", "FileCASigner", "new_file_key", "write_private"]


class CASigner(Protocol):
    """Signs certificates and CRLs with the CA key, wherever that key lives."""

    def public_key(self) -> ec.EllipticCurvePublicKey: ...

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate: ...

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList: ...


class FileCASigner:
    """The CA key in a passphrase-encrypted PKCS#8 file."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key

    @classmethod
    def load(cls, path: Path, passphrase: Secret) -> FileCASigner:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise CANotFoundError(
                f"CA key {path} does not exist; run 'bastion pki init' first"
            ) from None
        try:
            key = serialization.load_pem_private_key(data, passphrase.reveal().encode())
        except (ValueError, TypeError):
            raise PassphraseError(
                f"cannot decrypt CA key {path}: the passphrase is wrong (or the file is damaged)"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PassphraseError(f"CA key {path} is not an EC key")
        return cls(key)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._key.public_key()

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return builder.sign(self._key, hashes.SHA256())

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        return builder.sign(self._key, hashes.SHA256())


def new_file_key(path: Path, passphrase: Secret) -> tuple[FileCASigner, dict[str, str]]:
    """A new P-256 CA key, written PKCS#8-encrypted (0600) at ``path``."""
    key = ec.generate_private_key(ec.SECP256R1())
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase.reveal().encode()),
    )
    write_private(path, encrypted)
    return FileCASigner(key), {"type": "file", "path": path.name}


def write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)
