"""Certificate revocation, checked on every new TLS connection without a restart.

OpenSSL's own CRL check (``VERIFY_CRL_CHECK_LEAF``) reads CRLs into the context's store once; a
CRL added later sits beside the old one and OpenSSL may keep using the old. So Bastion checks
revocation itself, right after the handshake, against a :class:`RevocationChecker` that re-reads
``crl.pem`` whenever its modification time changes. A CRL that cannot be read, is not signed by
the CA, or is past its next update fails closed: every client certificate is refused until an
operator publishes a fresh CRL (``bastion pki crl``).

After a CA key rotation (``bastion pki rotate``) the CRL is signed by the new key. A checker made
with :meth:`RevocationChecker.from_ca_file` over ``ca-bundle.pem`` (the current and previous CA
certificates) re-reads that bundle whenever the CRL changes, so a rotation does not lock every
client out of a running gateway: a CRL signed by any CA certificate of the bundle is accepted.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from pki.ca import ec_public_key
from pki.errors import CRLError

__all__ = ["CACertificates", "RevocationChecker", "load_ca_bundle", "load_crl"]


CACertificates = x509.Certificate | Sequence[x509.Certificate]


def _as_list(ca: CACertificates) -> list[x509.Certificate]:
    return [ca] if isinstance(ca, x509.Certificate) else list(ca)


def load_ca_bundle(path: Path) -> list[x509.Certificate]:
    """Every certificate of a PEM file (``ca.crt`` or ``ca-bundle.pem``); CRLError if none."""
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CRLError(
            f"CA certificate file {path} cannot be read as PEM certificates ({type(exc).__name__})"
        ) from None
    return certificates


def load_crl(crl_path: Path, ca_certificate: CACertificates) -> x509.CertificateRevocationList:
    """Load a CRL and check that the CA (one of the given CA certificates) signed it and that it
    is not past its next update."""
    cas = _as_list(ca_certificate)
    try:
        crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    except FileNotFoundError:
        raise CRLError(f"CRL {crl_path} does not exist; run 'bastion pki crl --dir DIR'") from None
    except ValueError:
        raise CRLError(f"CRL {crl_path} is not a PEM CRL") from None
    if not any(
        crl.issuer == ca.subject and crl.is_signature_valid(ec_public_key(ca)) for ca in cas
    ):
        raise CRLError(
            f"CRL {crl_path} is not signed by the CA {cas[0].subject.rfc4514_string()}"
            + (f" (nor by any of the {len(cas)} CA certificates given)" if len(cas) > 1 else "")
        )
    next_update = crl.next_update_utc
    if next_update is not None and next_update < dt.datetime.now(dt.UTC):
        raise CRLError(
            f"CRL {crl_path} expired at {next_update.isoformat()}; run 'bastion pki crl' to publish a fresh one"
        )
    return crl


class RevocationChecker:
    """Answers "is this serial revoked?" from the newest good CRL on disk (thread-safe)."""

    def __init__(
        self, crl_path: Path, ca_certificate: CACertificates, *, ca_path: Path | None = None
    ) -> None:
        self._path = crl_path
        self._ca = _as_list(ca_certificate)
        self._ca_path = ca_path  # re-read with every new CRL (see the module docstring)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._revoked: frozenset[int] = frozenset()
        self._next_update: dt.datetime | None = None
        self._error: str | None = None
        self.reload()  # a missing or bad CRL at startup is an error, not a silent pass

    @classmethod
    def from_ca_file(cls, crl_path: Path, ca_path: Path) -> RevocationChecker:
        """A checker trusting every CA certificate in ``ca_path`` (re-read as CRLs change)."""
        return cls(crl_path, load_ca_bundle(ca_path), ca_path=ca_path)

    @property
    def path(self) -> Path:
        return self._path

    def reload(self) -> None:
        """Read the CRL now; raise :class:`CRLError` if it is unusable."""
        stat = os.stat(self._path) if self._path.exists() else None
        if self._ca_path is not None:
            self._ca = load_ca_bundle(self._ca_path)
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
