"""``bastion pki``: the internal CA (init, issue, revoke, crl, rotate, list).

``init --hsm`` creates (or finds) the CA's ECDSA P-256 key pair on the HSM token (label
``--key-label``, default ``bastion-ca``; token from the ``--hsm-*`` options or BASTION_HSM_*):
issuing, CRL signing and rotation then sign through PKCS#11 and the key never leaves the token.
Commands that sign read from ca.json where the key is and ask for the passphrase or the HSM.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pki.ca import CA, parse_lifetime
from pki.errors import IssueError, PassphraseError
from pki.secret import Secret, SecretSourceError, secret_from_env_or_file

if TYPE_CHECKING:
    from pki.hsm import HsmSession

DEFAULT_PASSPHRASE_ENV = "BASTION_CA_PASSPHRASE"  # noqa: S105 (a variable name, not a value)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("pki", help="internal CA: init, issue, revoke, crl, list")
    sub = parser.add_subparsers(dest="pki_command", metavar="ACTION", required=True)

    def with_passphrase(p: argparse.ArgumentParser) -> None:
        group = p.add_mutually_exclusive_group()
        group.add_argument(
            "--passphrase-file", type=Path, help="file holding the CA key passphrase"
        )
        group.add_argument(
            "--passphrase-env",
            default=DEFAULT_PASSPHRASE_ENV,
            metavar="VAR",
            help=f"environment variable holding the passphrase (default {DEFAULT_PASSPHRASE_ENV})",
        )

    def with_hsm(p: argparse.ArgumentParser) -> None:
        from pki.cli.hsm import add_hsm_options

        add_hsm_options(p)

    init = sub.add_parser(
        "init", help="create a CA (ECDSA P-256, key encrypted at rest or in the HSM)"
    )
    init.add_argument("--dir", type=Path, required=True)
    init.add_argument("--trust-domain", default="bastion.internal")
    init.add_argument("--lifetime", default="3650d", help="CA lifetime, e.g. 3650d")
    init.add_argument(
        "--hsm", action="store_true", help="keep the CA key in the HSM (never outside the token)"
    )
    init.add_argument("--key-label", default="bastion-ca", help="the CA key's label on the token")
    with_passphrase(init)
    with_hsm(init)
    init.set_defaults(func=_init)

    rotate = sub.add_parser(
        "rotate", help="replace the CA key and certificate; earlier certificates stay valid"
    )
    rotate.add_argument("--dir", type=Path, required=True)
    rotate.add_argument("--lifetime", default="3650d", help="the new CA certificate's lifetime")
    rotate.add_argument("--key-label", help="HSM CA: the new key's label (default: label.N)")
    rotate.add_argument(
        "--new-passphrase-file", type=Path, help="file CA: passphrase for the new key file"
    )
    with_passphrase(rotate)
    with_hsm(rotate)
    rotate.set_defaults(func=_rotate)

    issue = sub.add_parser("issue", help="issue a client or server certificate")
    issue.add_argument("kind", choices=["client", "server"])
    issue.add_argument("--dir", type=Path, required=True, help="the CA directory")
    issue.add_argument(
        "--spiffe-id",
        action="append",
        default=[],
        help="client: the SPIFFE ID, spiffe://<trust-domain>/<path> (exactly one)",
    )
    issue.add_argument(
        "--san", action="append", default=[], help="server: a DNS name or IP address (repeatable)"
    )
    issue.add_argument("--lifetime", help="e.g. 24h or 7d (default: client 7d, server 90d)")
    issue.add_argument("--out", type=Path, required=True, help="writes OUT.crt and OUT.key (0600)")
    with_passphrase(issue)
    with_hsm(issue)
    issue.set_defaults(func=_issue)

    revoke = sub.add_parser("revoke", help="revoke a certificate and publish a new CRL")
    revoke.add_argument("--dir", type=Path, required=True)
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("--serial", help="hexadecimal serial number")
    target.add_argument("--cert", type=Path, help="the certificate file to revoke")
    revoke.add_argument("--reason", default="unspecified")
    with_passphrase(revoke)
    with_hsm(revoke)
    revoke.set_defaults(func=_revoke)

    crl = sub.add_parser("crl", help="publish a fresh CRL (do this before the old one expires)")
    crl.add_argument("--dir", type=Path, required=True)
    crl.add_argument("--lifetime", default="7d")
    with_passphrase(crl)
    with_hsm(crl)
    crl.set_defaults(func=_crl)

    listing = sub.add_parser("list", help="list issued certificates and their revocation status")
    listing.add_argument("--dir", type=Path, required=True)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_list)


def _passphrase(args: argparse.Namespace) -> Secret:
    try:
        if args.passphrase_file is not None:
            return secret_from_env_or_file(file=args.passphrase_file)
        return secret_from_env_or_file(env=args.passphrase_env)
    except SecretSourceError as exc:
        raise PassphraseError(
            f"CA passphrase: {exc} (use --passphrase-file or --passphrase-env; never a flag value)"
        ) from None


def _hsm(args: argparse.Namespace) -> HsmSession:
    from pki.cli.hsm import hsm_config_from_args
    from pki.hsm import HsmSession

    return HsmSession(hsm_config_from_args(args))


def _key_in_hsm(directory: Path) -> bool:
    meta = directory / "ca.json"
    try:
        return bool(json.loads(meta.read_text())["key"].get("type") == "hsm")
    except (OSError, ValueError, KeyError):
        return False  # CA.open reports a missing or damaged CA


@contextmanager
def _open_ca(args: argparse.Namespace) -> Iterator[CA]:
    """The CA in --dir with its signer: the HSM session or the passphrase, as ca.json says."""
    if _key_in_hsm(args.dir):
        with _hsm(args) as session:
            yield CA.open(args.dir, hsm=session)
    else:
        yield CA.open(args.dir, passphrase=_passphrase(args))


def _init(args: argparse.Namespace) -> int:
    lifetime = parse_lifetime(args.lifetime)
    if args.hsm:
        from pki.hsm import HsmCASigner

        with _hsm(args) as session:
            created = session.ensure_ec_keypair(args.key_label)
            signer = HsmCASigner(session, args.key_label)
            ca = CA.init(
                args.dir,
                signer=signer,
                key_meta={
                    "type": "hsm",
                    "label": args.key_label,
                    "token": session.config.token_label,
                },
                trust_domain=args.trust_domain,
                lifetime=lifetime,
            )
        state = "created" if created else "found"
        print(f"created CA for trust domain {ca.trust_domain} in {args.dir}")
        print(
            f"  key:         HSM token {session.config.token_label!r}, label {args.key_label!r} "
            f"({state}; non-extractable, {signer.key_id})"
        )
    else:
        ca = CA.init(
            args.dir,
            passphrase=_passphrase(args),
            trust_domain=args.trust_domain,
            lifetime=lifetime,
        )
        print(f"created CA for trust domain {ca.trust_domain} in {args.dir}")
    print(f"  certificate: {ca.cert_path}\n  CRL:         {ca.crl_path}")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    lifetime = parse_lifetime(args.lifetime)
    if _key_in_hsm(args.dir):
        with _hsm(args) as session:
            ca = CA.open(args.dir, hsm=session)
            rotated = ca.rotate(hsm=session, label=args.key_label, lifetime=lifetime)
    else:
        ca = CA.open(args.dir, passphrase=_passphrase(args))
        if args.new_passphrase_file is None:
            raise PassphraseError("rotating a file CA key needs --new-passphrase-file")
        try:
            new = secret_from_env_or_file(file=args.new_passphrase_file)
        except SecretSourceError as exc:
            raise PassphraseError(f"new CA passphrase: {exc}") from None
        rotated = ca.rotate(passphrase=new, lifetime=lifetime)
    print(
        f"rotated the CA key in {args.dir}: new certificate serial "
        f"{format(rotated.certificate.serial_number, 'x')} ({rotated.key_meta})"
    )
    print(f"  trust bundle (new + previous): {args.dir / 'ca-bundle.pem'}")
    return 0


def _issue(args: argparse.Namespace) -> int:
    with _open_ca(args) as ca:
        return _issue_with(ca, args)


def _issue_with(ca: CA, args: argparse.Namespace) -> int:
    if args.kind == "client":
        if args.san:
            raise IssueError("--san is for server certificates; clients take --spiffe-id")
        issued = ca.issue_client(args.spiffe_id, lifetime=parse_lifetime(args.lifetime or "7d"))
    else:
        if args.spiffe_id:
            raise IssueError("--spiffe-id is for client certificates; servers take --san")
        issued = ca.issue_server(args.san, lifetime=parse_lifetime(args.lifetime or "90d"))
    cert_path, key_path = issued.write(args.out)
    print(f"issued {args.kind} certificate serial {issued.serial_hex}")
    print(f"  certificate: {cert_path}\n  key:         {key_path} (mode 0600)")
    print(f"  valid until: {issued.certificate.not_valid_after_utc.isoformat()}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    if args.cert is not None:
        from cryptography import x509

        serial = format(x509.load_pem_x509_certificate(args.cert.read_bytes()).serial_number, "x")
    else:
        serial = args.serial
    with _open_ca(args) as ca:
        ca.revoke(serial, reason=args.reason)
    print(f"revoked serial {serial.lower()}; CRL updated at {ca.crl_path}")
    return 0


def _crl(args: argparse.Namespace) -> int:
    with _open_ca(args) as ca:
        path = ca.write_crl(lifetime=parse_lifetime(args.lifetime))
        count = len(ca.revoked())
    print(f"published CRL with {count} revocation(s) at {path}")
    return 0


def _list(args: argparse.Namespace) -> int:
    ca = CA.open(args.dir)
    revoked = {rec["serial"] for rec in ca.revoked()}
    rows = [{**rec, "revoked": rec["serial"] in revoked} for rec in ca.issued()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        status = "REVOKED" if row["revoked"] else "valid"
        sans = " ".join(str(s) for s in row["sans"])  # type: ignore[attr-defined]
        print(f"{row['serial']}  {row['kind']:6}  {status:7}  until {row['not_after']}  {sans}")
    return 0
