"""``HsmSigner``: ECDSA P-256 / SHA-256 with the private key inside the HSM.

The digest is computed here and signed with ``CKM_ECDSA`` (the most widely implemented EC
mechanism; Luna, CloudHSM, YubiHSM and SoftHSM all offer it). :meth:`HsmSigner.sign` returns the
DER (X9.62 ``ECDSA-Sig-Value``) form, the one ``cryptography`` and OpenSSL verify directly:
``public_key.verify(sig, data, ec.ECDSA(hashes.SHA256()))`` or :func:`verify_ecdsa_p256_sha256`.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from pki.signing import SigningKeyError

if TYPE_CHECKING:
    from pki.hsm._session import HsmSession

__all__ = ["ECDSA_P256_SHA256", "HsmSigner", "verify_ecdsa_p256_sha256"]

ECDSA_P256_SHA256 = "ecdsa-p256-sha256"
_COORD = 32


class HsmSigner:
    """Signs with the token's signing key; implements :class:`pki.signing.Signer`."""

    algorithm = ECDSA_P256_SHA256

    def __init__(self, session: HsmSession, label: str | None = None) -> None:
        self._session = session
        self._label = label or session.config.signing_key_label
        self._public_der = session._public_key_der(self._label)
        fingerprint = hashlib.sha256(self._public_der).hexdigest()
        self._key_id = f"{self._label}:{fingerprint[:16]}"

    def __repr__(self) -> str:
        return f"HsmSigner(key_id={self._key_id!r})"

    @property
    def key_id(self) -> str:
        """``<label>:<first 16 hex digits of SHA-256 over the public key DER>``."""
        return self._key_id

    def public_key_pem(self) -> bytes:
        key = serialization.load_der_public_key(self._public_der)
        return key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign_raw(self, data: bytes) -> bytes:
        """The signature as raw ``r ‖ s`` (64 bytes, IEEE P1363 / JWS form)."""
        raw = self._session._sign_digest_raw(self._label, hashlib.sha256(data).digest())
        if len(raw) != 2 * _COORD:
            raise SigningKeyError(
                f"HSM returned a {len(raw)}-byte ECDSA signature; P-256 signatures are 64 bytes. "
                f"Check that key {self._label!r} is a P-256 key."
            )
        return raw

    def sign(self, data: bytes) -> bytes:
        """The signature in DER (``ECDSA-Sig-Value``), as ``cryptography`` verifies it."""
        raw = self.sign_raw(data)
        r = int.from_bytes(raw[:_COORD], "big")
        s = int.from_bytes(raw[_COORD:], "big")
        return encode_dss_signature(r, s)


def verify_ecdsa_p256_sha256(public_key_pem: bytes, signature: bytes, data: bytes) -> bool:
    """True if ``signature`` (DER) is a valid ECDSA P-256/SHA-256 signature of ``data``."""
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SigningKeyError("public key is not an ECDSA P-256 key")
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
