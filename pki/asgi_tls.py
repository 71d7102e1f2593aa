"""The HTTP edge's connection protocol: uvicorn's h11 protocol with identity and limits.

uvicorn does not hand the peer certificate to the application. Rather than fork it, Bastion
subclasses its h11 protocol: when a TLS connection is made (the handshake is complete by then),
the peer certificate is read from the ``ssl_object``, revocation is checked (refused connections
are closed before any HTTP is read), and every request on that connection gets the ASGI TLS
extension (``scope["extensions"]["tls"]``, per the ASGI TLS extension spec) plus Bastion's
verdict on the identity under ``scope["extensions"]["bastion.identity"]``: an
:class:`~pki.identity.Identity`, or the refusal reason as a ``str``.

The same protocol bounds what one peer can hold (:class:`ConnectionLimits`), on TLS and plain
listeners alike (issue 14):

- a connection cap: one connection over ``max_connections`` gets a 503 and is closed before any
  HTTP is read (uvicorn's ``limit_concurrency`` only answers 503 once a request's headers are in,
  so half-sent headers would still hold sockets);
- a header deadline from the connection's start (or the first byte of a keep-alive request) to
  the end of the headers, and a body deadline from there to the end of the body. Both are
  overall deadlines, so a peer dripping one byte per read cannot extend them (slowloris);
- ambiguous framing: a request with both Content-Length and Transfer-Encoding is answered 400
  and the connection closed (RFC 9112 §6.3), so a smuggled request behind it is never read;
  h11's own refusals (two Content-Lengths, a Transfer-Encoding other than chunked, a bad request
  line) get the same OpenAI-shaped 400 instead of uvicorn's plain text;
- shutdown closes idle connections at once (no wait for the peer's TLS close_notify), busy ones
  right after their answer.

Use :func:`protocol_class` to build the class and pass it to ``uvicorn.Config(http=...)``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import h11
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from uvicorn.protocols.http.h11_impl import H11Protocol

from pki.crl import RevocationChecker
from pki.identity import Identity, IdentityError, identity_from_certificate

__all__ = ["ConnectionLimits", "PeerPolicy", "peer_identity", "protocol_class"]

logger = logging.getLogger("bastion.tls")

IDENTITY_KEY = "bastion.identity"


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    """How the TLS edge judges a peer: trust domain, revocation, and a hook for refusals."""

    trust_domain: str
    revocation: RevocationChecker | None = None
    on_refused: Callable[[str], None] | None = None  # called with a short reason (for metrics)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one connection may hold; defaults and reasons are in ``gateway.config.ServerConfig``."""

    header_read_timeout_s: float = 10.0
    body_read_timeout_s: float = 30.0
    max_connections: int = 1024
    # called with "max_connections", "header_timeout", "body_timeout" or "framing" (metrics)
    on_dropped: Callable[[str], None] | None = None


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


def _error_answer(status: int, reason: str, error_type: str, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 answer with an OpenAI-shaped error body and ``connection: close``,
    written by the protocol itself (no request cycle exists, or it is being abandoned)."""
    body = json.dumps(
        {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n"
    )
    if status == 503:
        head += "retry-after: 1\r\n"
    return head.encode("ascii") + b"\r\n" + body


_OVER_CAP = _error_answer(
    503,
    "Service Unavailable",
    "server_error",
    "too_many_connections",
    "the gateway holds its maximum of open connections (server.max_connections); retry shortly",
)
_BAD_FRAMING = _error_answer(
    400,
    "Bad Request",
    "invalid_request_error",
    "bad_http_framing",
    "the request sends both Content-Length and Transfer-Encoding, so its length is ambiguous "
    "(RFC 9112 section 6.3); send one of them",
)
_MALFORMED = _error_answer(
    400,
    "Bad Request",
    "invalid_request_error",
    "bad_http_request",
    "the HTTP request is malformed (request line, header or body framing); fix the client",
)
_BODY_TIMEOUT = _error_answer(
    408,
    "Request Timeout",
    "invalid_request_error",
    "body_read_timeout",
    "the request body did not arrive within server.body_read_timeout_s; send it faster",
)


def _ambiguous_framing(headers: list[tuple[bytes, bytes]]) -> bool:
    names = {name.lower() for name, _ in headers}
    return b"content-length" in names and b"transfer-encoding" in names


def protocol_class(
    policy: PeerPolicy | None, limits: ConnectionLimits | None = None
) -> type[H11Protocol]:
    """An ``H11Protocol`` subclass that applies ``limits`` to every connection and ``policy``
    to every TLS connection (``policy=None``: a plain listener, no identity)."""
    bounds = limits or ConnectionLimits()

    def dropped(reason: str) -> None:
        if bounds.on_dropped is not None:
            bounds.on_dropped(reason)

    class BastionProtocol(H11Protocol):
        _phase: Literal["headers", "body", "none"] = "none"
        _deadline: asyncio.TimerHandle | None = None
        _refused = False
        _abandoned = False  # the body deadline passed: the request was answered 408

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            # Bastion writes its own access log (route template, never the raw path).
            self.access_log = False
            if len(self.connections) > bounds.max_connections:
                self.connections.discard(self)  # it never counts against the cap
                self._refused = True
                dropped("max_connections")
                transport.write(_OVER_CAP)
                transport.close()
                return
            self._arm("headers")  # a connection that sends nothing is dropped too
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is None or policy is None:
                self._install(None, None)  # plain listener (ops port): no identity
                return
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
            self._install(_tls_extension(ssl_object, certificate), verdict)

        def _install(
            self, extension: dict[str, Any] | None, verdict: Identity | str | None
        ) -> None:
            """Wrap the app: TLS facts into the scope, ambiguous framing refused before it."""
            inner = self.app
            protocol = self

            async def edge_app(scope: Any, receive: Any, send: Any) -> None:
                if scope["type"] == "http" and _ambiguous_framing(scope["headers"]):
                    dropped("framing")
                    await _refuse_framing(send)
                    return
                if extension is not None and scope["type"] in ("http", "websocket"):
                    extensions = dict(scope.get("extensions") or {})
                    extensions["tls"] = extension
                    extensions[IDENTITY_KEY] = verdict
                    scope = {**scope, "extensions": extensions}
                try:
                    await inner(scope, receive, send)
                except Exception as exc:
                    if not protocol._abandoned:
                        raise
                    # The body deadline passed and the peer got its 408: the app's complaint
                    # about the missing body (a disconnect) is expected, not an app failure.
                    logger.info("request abandoned at the body deadline (%s)", type(exc).__name__)

            self.app = edge_app

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
            if policy is not None and policy.on_refused is not None:
                policy.on_refused("revoked" if "revoked" in reason else "revocation_unknown")
            self._disarm()
            transport.abort()

        # ---- read deadlines -------------------------------------------------------------

        def _arm(self, phase: Literal["headers", "body"]) -> None:
            self._disarm()
            self._phase = phase
            seconds = (
                bounds.header_read_timeout_s if phase == "headers" else bounds.body_read_timeout_s
            )
            self._deadline = self.loop.call_later(seconds, self._deadline_passed, phase)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            self._phase = "none"

        def _track(self) -> None:
            """Move the deadline along with h11's view of the request being read."""
            state = self.conn.their_state
            if state is h11.IDLE:
                return  # still reading headers (the header deadline runs) or between requests
            if state is h11.SEND_BODY:
                if self._phase != "body":
                    self._arm("body")  # one deadline for the whole body, not per read
                return
            self._disarm()

        def _deadline_passed(self, phase: Literal["headers", "body"]) -> None:
            self._deadline = None
            self._phase = "none"
            if self.transport.is_closing():
                return
            client = self.client[0] if self.client else "?"
            logger.info("connection dropped: peer=%s reason=%s_timeout", client, phase)
            dropped(f"{phase}_timeout")
            cycle = self.cycle
            if phase == "body" and cycle is not None and not cycle.response_started:
                # The app is waiting for the body: answer 408 and let it see a disconnect.
                self._abandoned = True
                self.transport.write(_BODY_TIMEOUT)
                cycle.disconnected = True
                cycle.message_event.set()
                self.transport.close()
                return
            self.transport.abort()  # nothing owed to a peer that never finished its headers

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._phase == "none" and self.conn.their_state is h11.IDLE:
                self._arm("headers")  # first bytes of the next request on a kept-alive socket
            super().data_received(data)
            self._track()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._track()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def send_400_response(self, msg: str) -> None:
            """h11 refused the request (framing, request line, headers): OpenAI-shaped 400."""
            dropped("framing")
            self._disarm()
            self.transport.write(_MALFORMED)
            self.transport.close()

        def shutdown(self) -> None:
            """Graceful shutdown: an idle connection is closed now (aborted: a peer that never
            answers TLS close_notify must not hold the shutdown); a busy one after its answer."""
            if self.transport.is_closing():
                return
            if self.cycle is None or self.cycle.response_complete:
                self._disarm()
                self.transport.abort()
            else:
                self.cycle.keep_alive = False

    return BastionProtocol


async def _refuse_framing(send: Callable[[Any], Any]) -> None:
    body = _BAD_FRAMING.partition(b"\r\n\r\n")[2]
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),  # h11 then closes the connection after the answer
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
