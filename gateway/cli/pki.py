"""``bastion pki``: the internal CA (init, issue, revoke, crl, list)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pki.ca import CA, parse_lifetime
from pki.errors import IssueError, PassphraseError
from pki.secret import Secret, SecretSourceError, secret_from_env_or_file

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

    init = sub.add_parser("init", help="create a CA (ECDSA P-256, key encrypted at rest)")
    init.add_argument("--dir", type=Path, required=True)
    init.add_argument("--trust-domain", default="bastion.internal")
    init.add_argument("--lifetime", default="3650d", help="CA lifetime, e.g. 3650d")
    with_passphrase(init)
    init.set_defaults(func=_init)

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
    issue.set_defaults(func=_issue)

    revoke = sub.add_parser("revoke", help="revoke a certificate and publish a new CRL")
    revoke.add_argument("--dir", type=Path, required=True)
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("--serial", help="hexadecimal serial number")
    target.add_argument("--cert", type=Path, help="the certificate file to revoke")
    revoke.add_argument("--reason", default="unspecified")
    with_passphrase(revoke)
    revoke.set_defaults(func=_revoke)

    crl = sub.add_parser("crl", help="publish a fresh CRL (do this before the old one expires)")
    crl.add_argument("--dir", type=Path, required=True)
    crl.add_argument("--lifetime", default="7d")
    with_passphrase(crl)
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


def _init(args: argparse.Namespace) -> int:
    ca = CA.init(
        args.dir,
        passphrase=_passphrase(args),
        trust_domain=args.trust_domain,
        lifetime=parse_lifetime(args.lifetime),
    )
    print(f"created CA for trust domain {ca.trust_domain} in {args.dir}")
    print(f"  certificate: {ca.cert_path}\n  CRL:         {ca.crl_path}")
    return 0


def _issue(args: argparse.Namespace) -> int:
    ca = CA.open(args.dir, passphrase=_passphrase(args))
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
    ca = CA.open(args.dir, passphrase=_passphrase(args))
    if args.cert is not None:
        from cryptography import x509

        serial = format(x509.load_pem_x509_certificate(args.cert.read_bytes()).serial_number, "x")
    else:
        serial = args.serial
    ca.revoke(serial, reason=args.reason)
    print(f"revoked serial {serial.lower()}; CRL updated at {ca.crl_path}")
    return 0


def _crl(args: argparse.Namespace) -> int:
    ca = CA.open(args.dir, passphrase=_passphrase(args))
    path = ca.write_crl(lifetime=parse_lifetime(args.lifetime))
    print(f"published CRL with {len(ca.revoked())} revocation(s) at {path}")
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
