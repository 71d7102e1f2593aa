"""TLS contexts for Bastion's mutual-TLS links (caller → gateway, gateway → worker).

TLS 1.2 is the floor and 1.3 is negotiated whenever the peer can; a client certificate is
required and verified against the internal CA only (never the system store). Revocation is
checked after the handshake by :mod:`pki.crl` so a new CRL takes effect without a restart.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from pki.errors import PKIError

__all__ = ["client_context", "server_context"]

# Forward-secret AEAD suites only, for TLS 1.2 (TLS 1.3 suites are all AEAD and stay default).
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def _load_chain(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except FileNotFoundError as exc:
        raise PKIError(f"TLS certificate or key not found: {exc.filename}") from None
    except ssl.SSLError as exc:
        raise PKIError(
            f"TLS certificate {cert} and key {key} could not be loaded ({exc.reason}); "
            "check that the key belongs to the certificate"
        ) from None


def _load_ca(context: ssl.SSLContext, ca: Path) -> None:
    try:
        context.load_verify_locations(cafile=str(ca))
    except FileNotFoundError:
        raise PKIError(f"CA certificate {ca} not found") from None
    except ssl.SSLError as exc:
        raise PKIError(f"CA certificate {ca} could not be loaded ({exc.reason})") from None


def server_context(*, cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """A server context that REQUIRES a client certificate issued by ``ca``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(_TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.verify_mode = ssl.CERT_REQUIRED
    # Default purpose on the server side is "sslclient": OpenSSL refuses a leaf whose EKU
    # lacks clientAuth during the handshake.
    _load_chain(context, cert, key)
    _load_ca(context, ca)
    context.set_alpn_protocols(["http/1.1"])
    return context


def client_context(
    *, ca: Path, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A client context trusting only ``ca``, presenting ``cert``/``key`` when given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(_TLS12_CIPHERS)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    _load_ca(context, ca)
    if cert is not None and key is not None:
        _load_chain(context, cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context
