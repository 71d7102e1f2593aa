"""Expose the peer certificate to the ASGI app: a small extension of uvicorn's h11 protocol.

uvicorn does not hand the peer certificate to the application. Rather than fork it, Bastion
subclasses its h11 protocol: when a TLS connection is made (the handshake is complete by then),
the peer certificate is read from the ``ssl_object``, revocation is checked (refused connections
are closed before any HTTP is read), and every request on that connection gets the ASGI TLS
extension (``scope["extensions"]["tls"]``, per the ASGI TLS extension spec) plus Bastion's
verdict on the identity under ``scope["extensions"]["bastion.identity"]``: an
:class:`~pki.identity.Identity`, or the refusal reason as a ``str``.

Use :func:`protocol_class` to build the class and pass it to ``uvicorn.Config(http=...)``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from uvicorn.protocols.http.h11_impl import H11Protocol

from pki.crl import RevocationChecker
from pki.identity import Identity, IdentityError, identity_from_certificate

__all__ = ["PeerPolicy", "peer_identity", "protocol_class"]

logger = logging.getLogger("bastion.tls")

IDENTITY_KEY = "bastion.identity"


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    """How the TLS edge judges a peer: trust domain, revocation, and a hook for refusals."""

    trust_domain: str
    revocation: RevocationChecker | None = None
    on_refused: Callable[[str], None] | None = None  # called with a short reason (for metrics)


def peer_identity(scope: Mapping[str, Any]) -> Identity | str | None:
    """The identity of the caller, the reason it was refused, or None on a plain connection."""
    extensions = scope.get("extensions") or {}
    value = extensions.get(IDENTITY_KEY)
    if isinstance(value, Identity | str):
        return value
    return None


def _tls_extension(ssl_object: ssl.SSLObject, certificate: x509.Certificate) -> dict[str, Any]:
    cipher = ssl_object.cipher()
    return {
        "server_cert": None,
        "client_cert_chain": [certificate.public_bytes(serialization.Encoding.PEM).decode()],
        "client_cert_name": certificate.subject.rfc4514_string(),
        "client_cert_error": None,
        "tls_version": ssl_object.version(),
        "cipher_suite": cipher[0] if cipher else None,
    }


def protocol_class(policy: PeerPolicy) -> type[H11Protocol]:
    """An ``H11Protocol`` subclass that applies ``policy`` to every TLS connection."""

    class BastionTLSProtocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is None:
                return  # plain listener (ops port): no identity
            der = ssl_object.getpeercert(binary_form=True)
            if der is None:
                self._refuse(transport, "no client certificate")
                return
            certificate = x509.load_der_x509_certificate(der)
            if policy.revocation is not None:
                reason = policy.revocation.check(certificate.serial_number)
                if reason is not None:
                    self._refuse(transport, reason, serial=certificate.serial_number)
                    return
            verdict: Identity | str
            try:
                verdict = identity_from_certificate(certificate, trust_domain=policy.trust_domain)
            except IdentityError as exc:
                verdict = str(exc)
                if policy.on_refused is not None:
                    policy.on_refused("identity")
            extension = _tls_extension(ssl_object, certificate)
            inner = self.app

            async def app_with_tls(scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] in ("http", "websocket"):
                    extensions = dict(scope.get("extensions") or {})
                    extensions["tls"] = extension
                    extensions[IDENTITY_KEY] = verdict
                    scope = {**scope, "extensions": extensions}
                await inner(scope, receive, send)

            self.app = app_with_tls

        def _refuse(
            self, transport: asyncio.Transport, reason: str, serial: int | None = None
        ) -> None:
            client = self.client[0] if self.client else "?"
            logger.warning(
                "tls connection refused: peer=%s serial=%s reason=%s",
                client,
                format(serial, "x") if serial is not None else "-",
                reason,
            )
            if policy.on_refused is not None:
                policy.on_refused("revoked" if "revoked" in reason else "revocation_unknown")
            transport.abort()

    return BastionTLSProtocol
