"""Bastion's internal certificate authority.

A CA directory holds::

    ca.crt          the CA certificate (ECDSA P-256, self-signed, pathlen 0)
    ca.key          its private key, PKCS#8 encrypted with the operator's passphrase; absent
                    when the key lives in the HSM (``init --hsm``), where it never leaves the token
    ca.json         trust domain and key location (``file`` + path, or ``hsm`` + token label)
    ca-bundle.pem   the current CA certificate and, after a rotation, the previous ones, so
                    certificates issued before it keep verifying until they expire (point the
                    gateway's ``tls.ca`` here)
    previous/       the certificates (and file keys) of rotated-out CA keys
    issued.jsonl    one line per issued certificate: serial, kind, subject, SANs, validity
    revoked.jsonl   one line per revocation: serial, time, reason
    crl.pem         the current CRL, signed by the CA (the gateway re-reads it when it changes)

Client certificates carry exactly one SPIFFE URI SAN (``spiffe://<trust-domain>/<path>``) and EKU
clientAuth; server certificates carry DNS/IP SANs and EKU serverAuth. The signing key sits behind
:class:`CASigner` so that an HSM-held key (``pki.hsm``) signs through the same code.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pki._ca_keys import CASigner, FileCASigner, new_file_key, write_private
from pki.errors import CANotFoundError, IssueError, PassphraseError
from pki.secret import Secret

if TYPE_CHECKING:
    from pki.hsm import HsmSession

__all__ = [
    "CA",
    "CASigner",
    "CertKind",
    "FileCASigner",
    "IssuedCert",
    "ec_public_key",
    "parse_lifetime",
    "parse_spiffe_id",
]

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CA_META = "ca.json"
ISSUED = "issued.jsonl"
REVOKED = "revoked.jsonl"
CRL_FILE = "crl.pem"
CA_BUNDLE = "ca-bundle.pem"
PREVIOUS = "previous"

DEFAULT_CA_LIFETIME = dt.timedelta(days=3650)
DEFAULT_CLIENT_LIFETIME = dt.timedelta(days=7)
DEFAULT_SERVER_LIFETIME = dt.timedelta(days=90)
DEFAULT_CRL_LIFETIME = dt.timedelta(days=7)
MAX_LEAF_LIFETIME = dt.timedelta(days=398)  # CA/B Forum ceiling; nothing internal needs more

# RFC 3986 host-ish trust domain, lower case (SPIFFE-ID spec section 2.1).
_TRUST_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,253}[a-z0-9])?$")
# Path segments: letters, digits, . - _ (SPIFFE-ID spec section 2.2); no empty, "." or ".." segments.
_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_LIFETIME = re.compile(r"^(\d+)([mhd])$")


class CertKind(StrEnum):
    CLIENT = "client"
    SERVER = "server"


def parse_spiffe_id(value: str) -> tuple[str, str]:
    """Split ``spiffe://trust-domain/path`` into (trust domain, path), or raise :class:`IssueError`.

    Follows the SPIFFE-ID specification: scheme ``spiffe``, a lower-case trust domain, a non-empty
    path of segments ``[A-Za-z0-9._-]`` (no ``.`` or ``..``), no query, fragment, port or userinfo.
    """
    prefix = "spiffe://"
    if not value.startswith(prefix):
        raise IssueError(f"SPIFFE ID {value!r} must start with 'spiffe://'")
    rest = value[len(prefix) :]
    trust_domain, sep, path = rest.partition("/")
    if not _TRUST_DOMAIN.match(trust_domain):
        raise IssueError(
            f"SPIFFE ID {value!r}: trust domain {trust_domain!r} must be lower-case letters, "
            "digits, '.', '-' or '_' (no port, no user info)"
        )
    if not sep or not path:
        raise IssueError(
            f"SPIFFE ID {value!r} needs a workload path, e.g. spiffe://{trust_domain}/svc/billing"
        )
    for segment in path.split("/"):
        if segment in ("", ".", "..") or not _PATH_SEGMENT.match(segment):
            raise IssueError(
                f"SPIFFE ID {value!r}: path segment {segment!r} is not allowed "
                "(use letters, digits, '.', '-', '_'; no empty, '.' or '..' segments, no '?' or '#')"
            )
    return trust_domain, "/" + path


def parse_lifetime(text: str) -> dt.timedelta:
    """``90m``, ``24h``, ``7d`` → timedelta."""
    match = _LIFETIME.match(text.strip())
    if not match:
        raise IssueError(f"lifetime {text!r} is not understood; use e.g. 90m, 24h or 7d")
    amount, unit = int(match.group(1)), match.group(2)
    delta = {
        "m": dt.timedelta(minutes=amount),
        "h": dt.timedelta(hours=amount),
        "d": dt.timedelta(days=amount),
    }[unit]
    if delta <= dt.timedelta(0):
        raise IssueError(f"lifetime {text!r} must be positive")
    return delta


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """A freshly issued certificate and its (unencrypted) key: written by the caller with 0600."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def serial_hex(self) -> str:
        return format(self.certificate.serial_number, "x")

    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def write(self, prefix: Path) -> tuple[Path, Path]:
        """Write ``PREFIX.crt`` and ``PREFIX.key`` (0600); return both paths."""
        prefix.parent.mkdir(parents=True, exist_ok=True)
        cert_path = prefix.with_name(prefix.name + ".crt")
        key_path = prefix.with_name(prefix.name + ".key")
        write_private(key_path, self.key_pem())
        cert_path.write_bytes(self.cert_pem())
        return cert_path, key_path


def _self_signed(signer: CASigner, name: x509.Name, lifetime: dt.timedelta) -> x509.Certificate:
    public = signer.public_key()
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return signer.sign_certificate(builder)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _write_meta(directory: Path, meta: dict[str, object]) -> None:
    _atomic_write(directory / CA_META, (json.dumps(meta, indent=2) + "\n").encode())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CA:
    """An internal CA rooted in a directory. Build with :meth:`init` or :meth:`open`."""

    def __init__(
        self,
        directory: Path,
        certificate: x509.Certificate,
        trust_domain: str,
        signer: CASigner | None = None,
    ) -> None:
        self.directory = directory
        self.certificate = certificate
        self.trust_domain = trust_domain
        self._signer = signer

    # -- creation and loading -------------------------------------------------------------

    @classmethod
    def init(
        cls,
        directory: Path,
        *,
        passphrase: Secret | None = None,
        signer: CASigner | None = None,
        key_meta: dict[str, str] | None = None,
        trust_domain: str = "bastion.internal",
        common_name: str = "Bastion Internal CA",
        lifetime: dt.timedelta = DEFAULT_CA_LIFETIME,
    ) -> CA:
        """Create a new CA in ``directory`` (which must not already hold one). The key is a new
        file key encrypted with ``passphrase``, or ``signer`` (an HSM key, described in ca.json
        by ``key_meta``): then no private key is written anywhere."""
        if not _TRUST_DOMAIN.match(trust_domain):
            raise IssueError(
                f"trust domain {trust_domain!r} must be lower-case letters, digits, '.', '-' or '_'"
            )
        if signer is None and passphrase is None:
            raise PassphraseError("a file CA key needs a passphrase (or use the HSM: --hsm)")
        if signer is None and passphrase is not None and len(passphrase.reveal()) < 12:
            raise PassphraseError("the CA passphrase must be at least 12 characters long")
        directory.mkdir(parents=True, exist_ok=True)
        if (directory / CA_CERT).exists() or (directory / CA_KEY).exists():
            raise IssueError(f"{directory} already holds a CA; choose an empty directory")
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            ]
        )
        if signer is None:
            if passphrase is None:  # pragma: no cover - refused above; narrows the type
                raise PassphraseError("a file CA key needs a passphrase")
            signer, key_meta = new_file_key(directory / CA_KEY, passphrase)
        elif key_meta is None:
            raise IssueError("an external CA signer needs key_meta to record where the key is")
        certificate = _self_signed(signer, name, lifetime)
        pem = certificate.public_bytes(serialization.Encoding.PEM)
        (directory / CA_CERT).write_bytes(pem)
        (directory / CA_BUNDLE).write_bytes(pem)  # point tls.ca here: rotation extends it
        _write_meta(directory, {"trust_domain": trust_domain, "key": key_meta})
        (directory / ISSUED).touch()
        (directory / REVOKED).touch()
        ca = cls(directory, certificate, trust_domain, signer)
        ca.write_crl()
        return ca

    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        passphrase: Secret | None = None,
        signer: CASigner | None = None,
        hsm: HsmSession | None = None,
    ) -> CA:
        """Open an existing CA. Without a passphrase (file key), an HSM session (HSM key) or a
        signer it can read but not sign."""
        cert_path = directory / CA_CERT
        meta_path = directory / CA_META
        if not cert_path.exists() or not meta_path.exists():
            raise CANotFoundError(
                f"no CA in {directory} (missing {CA_CERT} or {CA_META}); "
                "run 'bastion pki init --dir DIR' first or check --dir"
            )
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        meta = json.loads(meta_path.read_text())
        key = meta["key"]
        if signer is None and key.get("type") == "hsm":
            if hsm is not None:
                from pki.hsm import HsmCASigner

                signer = HsmCASigner(hsm, str(key["label"]))
        elif signer is None and passphrase is not None:
            signer = FileCASigner.load(directory / key["path"], passphrase)
        if (
            signer is not None
            and signer.public_key().public_numbers() != ec_public_key(certificate).public_numbers()
        ):
            raise PassphraseError(
                f"the signing key does not belong to the CA certificate in {directory}"
            )
        return cls(directory, certificate, str(meta["trust_domain"]), signer)

    @property
    def cert_path(self) -> Path:
        return self.directory / CA_CERT

    @property
    def crl_path(self) -> Path:
        return self.directory / CRL_FILE

    @property
    def key_meta(self) -> dict[str, str]:
        """Where the CA key is (ca.json's ``key``): ``{"type": "file", "path": …}`` or
        ``{"type": "hsm", "label": …, "token": …}``."""
        meta: dict[str, str] = json.loads((self.directory / CA_META).read_text())["key"]
        return meta

    def _require_signer(self) -> CASigner:
        if self._signer is None:
            where = (
                "log in to the HSM that holds it (--hsm-token, BASTION_HSM_*)"
                if self.key_meta.get("type") == "hsm"
                else "give the CA passphrase"
            )
            raise PassphraseError(f"this operation signs with the CA key: {where}")
        return self._signer

    # -- rotation -------------------------------------------------------------------------

    def rotate(
        self,
        *,
        passphrase: Secret | None = None,
        hsm: HsmSession | None = None,
        label: str | None = None,
        lifetime: dt.timedelta = DEFAULT_CA_LIFETIME,
    ) -> CA:
        """Replace the CA key: a new key (on the token when the current one is there, else a
        new file key under ``passphrase``), a new self-signed CA certificate with the same name,
        the old certificate kept under ``previous/`` and in ``ca-bundle.pem`` so certificates
        issued before keep verifying, and a CRL signed by the new key (revocation is by serial,
        so it covers certificates issued under either key). Needs the current key: only the
        holder of the CA may rotate it."""
        from pki._rotate import rotate_ca

        return rotate_ca(self, passphrase=passphrase, hsm=hsm, label=label, lifetime=lifetime)

    # -- issuing --------------------------------------------------------------------------

    def issue_client(
        self,
        spiffe_ids: Sequence[str],
        *,
        lifetime: dt.timedelta = DEFAULT_CLIENT_LIFETIME,
        not_before: dt.datetime | None = None,
    ) -> IssuedCert:
        """A client certificate with exactly one SPIFFE URI SAN in this CA's trust domain."""
        if len(spiffe_ids) != 1:
            raise IssueError(
                f"a client certificate carries exactly one SPIFFE ID; {len(spiffe_ids)} were given"
            )
        spiffe_id = spiffe_ids[0]
        trust_domain, path = parse_spiffe_id(spiffe_id)
        if trust_domain != self.trust_domain:
            raise IssueError(
                f"SPIFFE ID {spiffe_id!r} is in trust domain {trust_domain!r}; "
                f"this CA issues for {self.trust_domain!r}"
            )
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, path.rsplit("/", 1)[-1][:64]),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            ]
        )
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id)]
        return self._issue(CertKind.CLIENT, subject, sans, lifetime, not_before)

    def issue_server(
        self,
        names: Sequence[str],
        *,
        lifetime: dt.timedelta = DEFAULT_SERVER_LIFETIME,
        not_before: dt.datetime | None = None,
    ) -> IssuedCert:
        """A server certificate for DNS names and IP addresses."""
        if not names:
            raise IssueError(
                "a server certificate needs at least one DNS name or IP address (--san)"
            )
        sans: list[x509.GeneralName] = []
        for name in names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                if not re.match(r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$", name):
                    raise IssueError(
                        f"server name {name!r} is neither a DNS name nor an IP address"
                    ) from None
                sans.append(x509.DNSName(name.lower()))
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64]),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.trust_domain),
            ]
        )
        return self._issue(CertKind.SERVER, subject, sans, lifetime, not_before)

    def _issue(
        self,
        kind: CertKind,
        subject: x509.Name,
        sans: list[x509.GeneralName],
        lifetime: dt.timedelta,
        not_before: dt.datetime | None,
    ) -> IssuedCert:
        if lifetime <= dt.timedelta(0) or lifetime > MAX_LEAF_LIFETIME:
            raise IssueError(
                f"certificate lifetime must be between 1 minute and {MAX_LEAF_LIFETIME.days} days"
            )
        signer = self._require_signer()
        key = ec.generate_private_key(ec.SECP256R1())
        start = not_before or (_now() - dt.timedelta(minutes=1))
        end = start + lifetime
        if end > self.certificate.not_valid_after_utc:
            end = self.certificate.not_valid_after_utc
        eku = (
            ExtendedKeyUsageOID.CLIENT_AUTH
            if kind is CertKind.CLIENT
            else ExtendedKeyUsageOID.SERVER_AUTH
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            # SPIFFE X.509-SVID: the SAN extension is critical when the subject carries no identity.
            .add_extension(x509.SubjectAlternativeName(sans), critical=kind is CertKind.CLIENT)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ec_public_key(self.certificate)),
                critical=False,
            )
        )
        certificate = signer.sign_certificate(builder)
        record = {
            "serial": format(certificate.serial_number, "x"),
            "kind": kind.value,
            "subject": certificate.subject.rfc4514_string(),
            "sans": [_san_text(s) for s in sans],
            "not_before": certificate.not_valid_before_utc.isoformat(),
            "not_after": certificate.not_valid_after_utc.isoformat(),
        }
        with (self.directory / ISSUED).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        return IssuedCert(certificate, key)

    # -- revocation -----------------------------------------------------------------------

    def issued(self) -> list[dict[str, object]]:
        path = self.directory / ISSUED
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def revoked(self) -> list[dict[str, str]]:
        path = self.directory / REVOKED
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def revoke(self, serial_hex: str, *, reason: str = "unspecified") -> None:
        """Revoke a certificate this CA issued and publish a new CRL."""
        serial_hex = serial_hex.lower().removeprefix("0x")
        try:
            int(serial_hex, 16)
        except ValueError:
            raise IssueError(f"serial {serial_hex!r} is not a hexadecimal number") from None
        known = {str(rec["serial"]) for rec in self.issued()}
        if serial_hex not in known:
            raise IssueError(
                f"serial {serial_hex} was not issued by this CA (see 'bastion pki list')"
            )
        if any(rec["serial"] == serial_hex for rec in self.revoked()):
            raise IssueError(f"serial {serial_hex} is already revoked")
        if reason not in _REASONS:
            raise IssueError(
                f"revocation reason {reason!r} is unknown; use one of {', '.join(sorted(_REASONS))}"
            )
        self._require_signer()
        with (self.directory / REVOKED).open("a", encoding="utf-8") as handle:
            handle.write(
                json.dumps({"serial": serial_hex, "time": _now().isoformat(), "reason": reason})
                + "\n"
            )
        self.write_crl()

    def write_crl(self, *, lifetime: dt.timedelta = DEFAULT_CRL_LIFETIME) -> Path:
        """Sign a CRL listing every revocation and write it atomically to ``crl.pem``."""
        signer = self._require_signer()
        now = _now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now - dt.timedelta(minutes=1))
            .next_update(now + lifetime)
            .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ec_public_key(self.certificate)),
                critical=False,
            )
        )
        for rec in self.revoked():
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(rec["serial"], 16))
                .revocation_date(dt.datetime.fromisoformat(rec["time"]))
                .add_extension(
                    x509.CRLReason(_REASONS[rec.get("reason", "unspecified")]), critical=False
                )
                .build()
            )
            builder = builder.add_revoked_certificate(entry)
        crl = signer.sign_crl(builder)
        tmp = self.crl_path.with_suffix(".tmp")
        tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        os.replace(tmp, self.crl_path)
        return self.crl_path


def ec_public_key(certificate: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = certificate.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise IssueError("the CA certificate does not hold an EC public key")
    return key


def _san_text(name: x509.GeneralName) -> str:
    if isinstance(name, x509.UniformResourceIdentifier):
        return f"URI:{name.value}"
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    return str(name)


_REASONS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
}
