"""``HsmCASigner``: the internal CA's key on the token; certificates and CRLs signed by PKCS#11.

``cryptography`` signs a certificate or CRL builder only with a key object in process memory, and
the CA key never leaves the token. So the builder is first signed with a throwaway P-256 key,
which fixes the to-be-signed bytes (the signature algorithm, ecdsa-with-SHA256, is part of them
and is the same for both keys); the token signs those bytes (CKM_ECDSA over SHA-256), and the
DER is assembled as RFC 5280 defines it::

    Certificate  ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue BIT STRING }
    CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue BIT STRING }

The result is parsed again and its signature checked against the token's public key before it
is returned, so a malformed assembly or a wrong key can never be published.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pki.hsm._errors import HSMOperationError
from pki.hsm._signer import HsmSigner

if TYPE_CHECKING:
    from pki.hsm._session import HsmSession

__all__ = ["DEFAULT_CA_KEY_LABEL", "HsmCASigner"]

DEFAULT_CA_KEY_LABEL = "bastion-ca"


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _tlv_end(der: bytes, at: int) -> int:
    """Index just past the DER element starting at ``at``."""
    first = der[at + 1]
    if first < 0x80:
        return at + 2 + first
    count = first & 0x7F
    length = int.from_bytes(der[at + 2 : at + 2 + count], "big")
    return at + 2 + count + length


def _content_start(der: bytes) -> int:
    first = der[1]
    return 2 if first < 0x80 else 2 + (first & 0x7F)


def _assemble(signed_der: bytes, tbs: bytes, signature: bytes) -> bytes:
    """Replace the signature of ``signed_der`` (a signed SEQUENCE whose first element is
    ``tbs``) with ``signature``."""
    start = _content_start(signed_der)
    if signed_der[start : start + len(tbs)] != tbs:
        raise HSMOperationError("could not locate the to-be-signed part of the certificate")
    algorithm = signed_der[start + len(tbs) : _tlv_end(signed_der, start + len(tbs))]
    bit_string = b"\x03" + _der_length(len(signature) + 1) + b"\x00" + signature
    body = tbs + algorithm + bit_string
    return b"\x30" + _der_length(len(body)) + body


class HsmCASigner:
    """Implements :class:`pki.ca.CASigner` with an ECDSA P-256 key pair on the token."""

    def __init__(self, session: HsmSession, label: str = DEFAULT_CA_KEY_LABEL) -> None:
        self._signer = HsmSigner(session, label)
        key = serialization.load_pem_public_key(self._signer.public_key_pem())
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
            key.curve, ec.SECP256R1
        ):
            raise HSMOperationError(f"the CA key {label!r} on the token is not a P-256 key")
        self._public = key
        self.label = label

    def __repr__(self) -> str:
        return f"HsmCASigner(key_id={self._signer.key_id!r})"

    @property
    def key_id(self) -> str:
        return self._signer.key_id

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        draft = builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
        tbs = draft.tbs_certificate_bytes
        der = _assemble(draft.public_bytes(serialization.Encoding.DER), tbs, self._signer.sign(tbs))
        certificate = x509.load_der_x509_certificate(der)
        try:
            self._public.verify(
                certificate.signature, certificate.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256())
            )
        except InvalidSignature:  # never publish what does not verify
            raise HSMOperationError(
                "the token's signature over the certificate does not verify; check the CA key "
                f"label {self.label!r}"
            ) from None
        return certificate

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        draft = builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
        tbs = draft.tbs_certlist_bytes
        der = _assemble(draft.public_bytes(serialization.Encoding.DER), tbs, self._signer.sign(tbs))
        crl = x509.load_der_x509_crl(der)
        if not crl.is_signature_valid(self._public):
            raise HSMOperationError(
                f"the token's signature over the CRL does not verify; check the CA key label "
                f"{self.label!r}"
            )
        return crl
