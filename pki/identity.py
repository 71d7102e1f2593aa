"""A peer certificate becomes an :class:`Identity`, or is refused with the reason.

Rules (SPIFFE X.509-SVID): the leaf is not a CA, has EKU clientAuth, and carries exactly one URI
SAN, a SPIFFE ID in the expected trust domain. Certificates with zero or several URI SANs, a
foreign trust domain, or a malformed SPIFFE ID are refused. The chain itself is verified by
OpenSSL during the handshake; this module judges what the verified leaf says.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID

from pki.ca import parse_spiffe_id
from pki.errors import IssueError, PKIError

__all__ = ["Identity", "IdentityError", "identity_from_certificate"]


class IdentityError(PKIError):
    """A verified certificate that is not an acceptable workload identity."""


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: a SPIFFE ID, with the certificate facts worth auditing."""

    spiffe_id: str
    trust_domain: str
    path: str
    serial_hex: str

    def __str__(self) -> str:
        return self.spiffe_id


def identity_from_certificate(certificate: x509.Certificate, *, trust_domain: str) -> Identity:
    """Judge a verified leaf certificate; raise :class:`IdentityError` with the reason if refused."""
    try:
        constraints = certificate.extensions.get_extension_for_oid(ExtensionOID.BASIC_CONSTRAINTS)
        if isinstance(constraints.value, x509.BasicConstraints) and constraints.value.ca:
            raise IdentityError("a CA certificate cannot be used as a client identity")
    except x509.ExtensionNotFound:
        pass  # no basicConstraints: an end-entity certificate (RFC 5280 4.2.1.9)
    try:
        eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise IdentityError(
            "client certificate has no extendedKeyUsage; clientAuth is required"
        ) from None
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise IdentityError("client certificate is not valid for clientAuth (extendedKeyUsage)")
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise IdentityError(
            "client certificate has no subjectAltName; a SPIFFE URI SAN is required"
        ) from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise IdentityError(
            f"client certificate must carry exactly one URI SAN (SPIFFE ID); it carries {len(uris)}"
        )
    try:
        domain, path = parse_spiffe_id(uris[0])
    except IssueError as exc:
        raise IdentityError(f"client certificate URI SAN is not a valid SPIFFE ID: {exc}") from None
    if domain != trust_domain:
        raise IdentityError(
            f"client certificate is from trust domain {domain!r}; this service trusts {trust_domain!r}"
        )
    return Identity(
        spiffe_id=uris[0],
        trust_domain=domain,
        path=path,
        serial_hex=format(certificate.serial_number, "x"),
    )
