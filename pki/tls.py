"""TLS contexts for Bastion's mutual-TLS links (caller → gateway, gateway → worker).

TLS 1.2 is the floor and 1.3 is negotiated whenever the peer can; a client certificate is
required and verified against the internal CA only (never the system store). Revocation is
checked after the handshake by :mod:`pki.crl` so a new CRL takes effect without a restart.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pki.errors import PKIError

__all__ = ["client_context", "count_handshake_alerts", "server_context"]

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


# TLS alert descriptions (RFC 8446 section 6; RFC 5246 section 7.2) that a handshake ends with.
_ALERTS = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    22: "record_overflow",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    109: "missing_extension",
    110: "unsupported_extension",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    115: "unknown_psk_identity",
    116: "certificate_required",
    120: "no_application_protocol",
}


def count_handshake_alerts(context: ssl.SSLContext, on_alert: Callable[[str], None]) -> bool:
    """Report every fatal TLS alert this context sends (``unknown_ca``, ``certificate_expired``,
    ``protocol_version``, ``certificate_required``...) or receives (``peer:<name>``).

    asyncio logs failed server handshakes only in debug mode and uvicorn never sees them, so
    the reasons are read from OpenSSL's message callback, which CPython exposes as
    ``SSLContext._msg_callback`` (present since 3.8; used by its own test suite). If a future
    Python drops it, this returns False and the counter simply stays absent.
    """
    if not hasattr(context, "_msg_callback"):
        return False
    alert_type = ssl._TLSContentType.ALERT  # type: ignore[attr-defined]

    def callback(
        conn: Any, direction: str, version: Any, content_type: Any, msg_type: Any, data: bytes
    ) -> None:
        if content_type != alert_type or len(data) < 2 or data[0] != 2:  # 2 = fatal
            return
        name = _ALERTS.get(data[1], f"alert_{data[1]}")
        on_alert(name if direction == "write" else f"peer:{name}")

    context._msg_callback = callback
    return True
