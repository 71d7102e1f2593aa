"""Certificate revocation, checked on every new TLS connection without a restart.

OpenSSL's own CRL check (``VERIFY_CRL_CHECK_LEAF``) reads CRLs into the context's store once; a
CRL added later sits beside the old one and OpenSSL may keep using the old. So Bastion checks
revocation itself, right after the handshake, against a :class:`RevocationChecker` that re-reads
``crl.pem`` whenever its modification time changes. A CRL that cannot be read, is not signed by
the CA, or is past its next update fails closed: every client certificate is refused until an
operator publishes a fresh CRL (``bastion pki crl``).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from pathlib import Path

from cryptography import x509

from pki.ca import ec_public_key
from pki.errors import CRLError

__all__ = ["RevocationChecker", "load_crl"]


def load_crl(crl_path: Path, ca_certificate: x509.Certificate) -> x509.CertificateRevocationList:
    """Load a CRL and check that the CA signed it and that it is not past its next update."""
    try:
        crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    except FileNotFoundError:
        raise CRLError(f"CRL {crl_path} does not exist; run 'bastion pki crl --dir DIR'") from None
    except ValueError:
        raise CRLError(f"CRL {crl_path} is not a PEM CRL") from None
    if not crl.is_signature_valid(ec_public_key(ca_certificate)):
        raise CRLError(
            f"CRL {crl_path} is not signed by the CA {ca_certificate.subject.rfc4514_string()}"
        )
    next_update = crl.next_update_utc
    if next_update is not None and next_update < dt.datetime.now(dt.UTC):
        raise CRLError(
            f"CRL {crl_path} expired at {next_update.isoformat()}; run 'bastion pki crl' to publish a fresh one"
        )
    return crl


class RevocationChecker:
    """Answers "is this serial revoked?" from the newest good CRL on disk (thread-safe)."""

    def __init__(self, crl_path: Path, ca_certificate: x509.Certificate) -> None:
        self._path = crl_path
        self._ca = ca_certificate
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._revoked: frozenset[int] = frozenset()
        self._next_update: dt.datetime | None = None
        self._error: str | None = None
        self.reload()  # a missing or bad CRL at startup is an error, not a silent pass

    @property
    def path(self) -> Path:
        return self._path

    def reload(self) -> None:
        """Read the CRL now; raise :class:`CRLError` if it is unusable."""
        stat = os.stat(self._path) if self._path.exists() else None
        crl = load_crl(self._path, self._ca)
        with self._lock:
            self._revoked = frozenset(entry.serial_number for entry in crl)
            self._next_update = crl.next_update_utc
            self._stamp = (stat.st_mtime_ns, stat.st_size) if stat else None
            self._error = None

    def _refresh(self) -> None:
        try:
            stat = os.stat(self._path)
        except OSError:
            with self._lock:
                self._error = f"CRL {self._path} is missing"
            return
        if (stat.st_mtime_ns, stat.st_size) == self._stamp:
            return
        try:
            self.reload()
        except CRLError as exc:
            with self._lock:
                self._error = str(exc)
                self._stamp = (stat.st_mtime_ns, stat.st_size)

    def check(self, serial: int) -> str | None:
        """None if the certificate may connect, else the reason it may not."""
        self._refresh()
        with self._lock:
            if self._error is not None:
                return f"revocation status unknown ({self._error})"
            if self._next_update is not None and self._next_update < dt.datetime.now(dt.UTC):
                return "revocation status unknown (CRL past its next update)"
            if serial in self._revoked:
                return "certificate revoked"
        return None
