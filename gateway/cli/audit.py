"""``bastion audit``: verify, export, tail, checkpoint, pubkey and prune the audit trail.

The store comes from ``--config FILE`` (the gateway config's ``audit:`` section), or directly
from ``--sqlite PATH`` / ``--dsn DSN`` (a DSN's password is better left to ``PGPASSWORD`` or
``~/.pgpass``: the command line is visible in ``ps``).

``verify`` checks the checkpoints against a PINNED key, never only the keys stored beside the
records (whoever can write the store can add a key and re-sign): with ``--config`` the configured
signer's public key (the HSM's or the key file's) plus ``audit.retired_public_keys`` (a rotated
signer's earlier keys); with ``--sqlite``/``--dsn`` the ``--pubkey`` files (repeatable, for
rotation), or ``--trust-stored-keys``, whose output says what it does not prove. It exits 0 when
every record chains and is covered by a valid signed checkpoint, 1 when something was altered
(the first problem is named), 2 when records after the last checkpoint are not yet covered (pass
``--allow-uncovered`` to accept that for a running gateway). ``--reference COPY`` (an earlier
SQLite copy) names the exact record of a re-chained rewrite. Every action but ``prune`` opens the
store read-only.

``pubkey`` prints the signer's public key (PEM) with its ``SHA256:`` fingerprint, for the
auditor to keep out of band.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.audit._errors import AuditConfigError

if TYPE_CHECKING:
    from gateway.audit import AuditConfig, Store
    from pki.signing import FileSigner

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit", help="audit trail: verify, export, tail, checkpoint, pubkey, prune"
    )
    sub = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    def store_options(p: argparse.ArgumentParser) -> None:
        group = p.add_mutually_exclusive_group(required=True)
        group.add_argument("--config", type=Path, help="gateway config YAML with an audit: section")
        group.add_argument("--sqlite", type=Path, metavar="PATH", help="SQLite audit trail file")
        group.add_argument("--dsn", help="PostgreSQL conninfo or URL (password via PGPASSWORD)")

    verify = sub.add_parser("verify", help="recompute the chain and check every signature")
    store_options(verify)
    verify.add_argument(
        "--pubkey",
        type=Path,
        action="append",
        default=[],
        help="PEM public key the checkpoints must be signed with (repeatable, for a rotated "
        "signer); required with --sqlite/--dsn unless --trust-stored-keys",
    )
    verify.add_argument(
        "--trust-stored-keys",
        action="store_true",
        help="use the keys recorded in the store itself: proves consistency, NOT authorship",
    )
    verify.add_argument(
        "--reference",
        type=Path,
        metavar="PATH",
        help="an earlier SQLite copy of the trail (a backup): names the first record that "
        "differs from it when a rewrite was re-chained",
    )
    verify.add_argument(
        "--checkpoint", type=Path, help="a checkpoint saved earlier: detects truncation/rollback"
    )
    verify.add_argument(
        "--allow-uncovered",
        action="store_true",
        help="exit 0 even if records after the last signed checkpoint are not yet covered",
    )
    verify.set_defaults(func=_verify)

    export = sub.add_parser("export", help="records in a time range as JSON Lines or CSV")
    store_options(export)
    export.add_argument("--since", help="from this date/time (inclusive, RFC 3339, UTC if naive)")
    export.add_argument("--until", help="to this date/time (exclusive)")
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("--output", type=Path, help="write here instead of standard output")
    export.set_defaults(func=_export)

    tail = sub.add_parser("tail", help="the last records, one human-readable line each")
    store_options(tail)
    tail.add_argument("-n", "--lines", type=int, default=20)
    tail.set_defaults(func=_tail)

    checkpoint = sub.add_parser("checkpoint", help="print the latest signed checkpoint")
    store_options(checkpoint)
    checkpoint.add_argument("--output", type=Path, help="also save it here (for --checkpoint)")
    checkpoint.set_defaults(func=_checkpoint)

    pubkey = sub.add_parser(
        "pubkey", help="print the checkpoint public key (PEM) with its fingerprint"
    )
    source = pubkey.add_mutually_exclusive_group(required=True)
    source.add_argument("--signing-key", type=Path, help="derive it from this Ed25519 key file")
    source.add_argument(
        "--config", type=Path, help="the configured signer's key (signing: HSM or key file)"
    )
    source.add_argument(
        "--sqlite", type=Path, metavar="PATH", help="the keys stored in this trail (unverified)"
    )
    source.add_argument("--dsn", help="the keys stored in this trail (unverified)")
    pubkey.add_argument("--passphrase-file", type=Path, help="the signing key's passphrase")
    pubkey.set_defaults(func=_pubkey)

    payload = sub.add_parser(
        "payload", help="e-discovery: decrypt the captured payloads of one decision (needs the HSM)"
    )
    payload.add_argument("decision_id", help="the x-bastion-decision-id of the request")
    payload.add_argument(
        "--config", type=Path, required=True, help="gateway config (audit: and hsm: sections)"
    )
    payload.set_defaults(func=_payload)

    prune = sub.add_parser("prune", help="delete records before a date; the rest stays verifiable")
    store_options(prune)
    prune.add_argument("--before", required=True, help="delete records older than this date")
    prune.add_argument(
        "--signing-key", type=Path, required=True, help="the checkpoint key (signs the anchor)"
    )
    prune.add_argument("--passphrase-file", type=Path, help="the signing key's passphrase")
    prune.set_defaults(func=_prune)


# -- store selection --------------------------------------------------------------------------


def _config_from_yaml(path: Path) -> AuditConfig:
    from gateway.audit._config import audit_config_from_file

    return audit_config_from_file(path)


def _configured_public_keys(path: Path) -> list[bytes]:
    """The configured signer's public key (``signing:``: HSM or key file), then the retired
    ones (``audit.retired_public_keys``). Reads only the sections it needs."""
    from gateway.audit._config import read_config_document, relative_to_file
    from pki.signing import FileSigner

    document = read_config_document(path)
    audit = _config_from_yaml(path)
    signing = document.get("signing")
    signing = signing if isinstance(signing, dict) else {}
    keys: list[bytes] = []
    if signing.get("hsm") is True:
        from pki.hsm import HsmSession, HsmSettings, HsmSigner

        hsm = document.get("hsm")
        if not isinstance(hsm, dict):
            raise AuditConfigError(f"{path}: signing.hsm is true but there is no 'hsm:' section")
        for key in ("module", "pin_file"):
            if key in hsm:
                hsm[key] = relative_to_file(path, hsm[key])
        with HsmSession(HsmSettings.model_validate(hsm).resolve()) as session:
            keys.append(HsmSigner(session).public_key_pem())
    elif isinstance(signing.get("key_file"), str):
        key_file = Path(str(relative_to_file(path, signing["key_file"])))
        keys.append(FileSigner.load(key_file, key_id=key_file.stem).public_key_pem())
    else:
        raise AuditConfigError(
            f"{path} names no checkpoint signer (signing.key_file or signing.hsm: true); "
            "verify with --pubkey instead"
        )
    keys += [_read_key(retired) for retired in audit.retired_public_keys]
    return keys


def _open(args: argparse.Namespace, *, read_only: bool = True) -> Store:
    """The store the options name; read-only (SQLite ``mode=ro``, PostgreSQL read-only
    transactions) for every action but ``prune``."""
    from gateway.audit import AuditConfig, open_store
    from pki.secret import Secret

    if args.config is not None:
        return open_store(_config_from_yaml(args.config), read_only=read_only)
    if args.sqlite is not None:
        return open_store(AuditConfig(backend="sqlite", path=args.sqlite), read_only=read_only)
    return open_store(AuditConfig(backend="postgres", dsn=Secret(args.dsn)), read_only=read_only)


def _signer(path: Path, passphrase_file: Path | None) -> FileSigner:
    from pki.secret import secret_from_env_or_file
    from pki.signing import FileSigner

    passphrase = secret_from_env_or_file(file=passphrase_file) if passphrase_file else None
    return FileSigner.load(path, key_id=path.stem, passphrase=passphrase)


# -- actions ----------------------------------------------------------------------------------


def _read_key(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AuditConfigError(f"cannot read public key {path}: {exc.strerror}") from None


def _verify(args: argparse.Namespace) -> int:
    from gateway.audit import verify_store

    keys = [_read_key(path) for path in args.pubkey]
    if args.config is not None:
        keys = _configured_public_keys(args.config) + keys
    elif not keys and not args.trust_stored_keys:
        raise AuditConfigError(
            "verify --sqlite/--dsn needs the signer's public key: pass --pubkey FILE (the key "
            "the auditor keeps, from `bastion audit pubkey --config`), or --trust-stored-keys to "
            "accept the keys stored in the trail (which does not prove who signed it)"
        )
    pinned = None
    if args.checkpoint is not None:
        try:
            pinned = args.checkpoint.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AuditConfigError(f"cannot read checkpoint {args.checkpoint}: {exc}") from None
    store = _open(args)
    reference = None
    try:
        if args.reference is not None:
            from gateway.audit import AuditConfig, open_store

            reference = open_store(
                AuditConfig(backend="sqlite", path=args.reference), read_only=True
            )
        report = verify_store(
            store,
            public_keys=keys or None,
            trust_stored_keys=args.trust_stored_keys and not keys,
            pinned=pinned,
            reference=reference,
        )
    finally:
        store.close()
        if reference is not None:
            reference.close()
    print(report.summary())
    if not report.ok:
        return 1
    if report.uncovered and not args.allow_uncovered:
        return 2
    return 0


def _export(args: argparse.Namespace) -> int:
    from gateway.audit._export import csv_lines, jsonl_lines, normalize_time

    since = normalize_time(args.since, option="--since") if args.since else None
    until = normalize_time(args.until, option="--until") if args.until else None
    store = _open(args)
    try:
        records = store.records(since=since, until=until)
        lines = csv_lines(records) if args.format == "csv" else jsonl_lines(records)
        if args.output is None:
            try:
                sys.stdout.writelines(lines)
                sys.stdout.flush()
            except BrokenPipeError:
                # `export | head`: the reader has what it wanted; stop quietly (Python docs,
                # "Note on SIGPIPE").
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        else:
            with args.output.open("w", encoding="utf-8", newline="") as out:
                out.writelines(lines)
    finally:
        store.close()
    return 0


def _tail(args: argparse.Namespace) -> int:
    from gateway.audit._export import tail_line

    store = _open(args)
    try:
        for rec in store.last_records(max(1, args.lines)):
            print(tail_line(rec))
    finally:
        store.close()
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    store = _open(args)
    try:
        notes = store.checkpoint_notes()
    finally:
        store.close()
    if not notes:
        raise AuditConfigError(
            "the trail has no signed checkpoint yet; the gateway signs one every "
            "audit.checkpoint_interval_s and on shutdown"
        )
    sys.stdout.write(notes[-1])
    if args.output is not None:
        args.output.write_text(notes[-1], encoding="utf-8")
    return 0


def _print_key(pem: bytes, label: str) -> None:
    from gateway.audit._checkpoint import key_fingerprint

    # Text before "-----BEGIN" is ignored by PEM readers (RFC 7468 §2), so the output is still
    # a usable --pubkey file.
    sys.stdout.write(f"# {label}\n# fingerprint {key_fingerprint(pem)}\n{pem.decode()}")


def _pubkey(args: argparse.Namespace) -> int:
    if args.signing_key is not None:
        pem = _signer(args.signing_key, args.passphrase_file).public_key_pem()
        _print_key(pem, f"checkpoint signer (key file {args.signing_key.name})")
        return 0
    if args.config is not None:
        pems = _configured_public_keys(args.config)
        _print_key(pems[0], "checkpoint signer (configured)")
        for pem in pems[1:]:
            _print_key(pem, "retired checkpoint signer (audit.retired_public_keys)")
        return 0
    store = _open(args)
    try:
        keys = store.keys()
    finally:
        store.close()
    if not keys:
        raise AuditConfigError("the trail has no checkpoint key recorded yet")
    for key in keys:
        _print_key(
            key.public_key_pem,
            f"{key.name} {key.algorithm} key id {key.key_id_hex}, as stored in the trail "
            "(unverified: compare the fingerprint with the one you hold)",
        )
    return 0


def _prune(args: argparse.Namespace) -> int:
    from gateway.audit import prune_store
    from gateway.audit._export import normalize_time

    before = normalize_time(args.before, option="--before")
    signer = _signer(args.signing_key, args.passphrase_file)
    store = _open(args, read_only=False)
    try:
        result = prune_store(store, signer, before=before)
    finally:
        store.close()
    if result.removed == 0:
        print(f"nothing to prune before {before}")
    else:
        print(
            f"pruned {result.removed} records (seq ..{result.through_seq}) before {before}; "
            f"signed anchor at seq {result.through_seq}; recorded as {result.record_id}"
        )
    return 0


def _payload(args: argparse.Namespace) -> int:
    """Print the decrypted request (and answer) captured for one decision, as JSON."""
    import json

    from gateway.audit import open_store
    from gateway.audit.capture import open_payloads
    from gateway.config import load_config
    from pki.hsm import HsmSession, HsmSettings

    config = load_config(args.config)
    if config.hsm is None:
        raise AuditConfigError(
            f"{args.config} has no 'hsm:' section: captured payloads need the HSM"
        )
    store = open_store(_config_from_yaml(args.config))
    keys, payloads = [], []
    try:
        for rec in store.records():
            if rec.kind not in ("capkey", "payload"):
                continue
            data = json.loads(rec.body).get("data", {})
            if rec.kind == "capkey":
                keys.append(data)
            elif data.get("decision_id") == args.decision_id:
                payloads.append(data)
    finally:
        store.close()
    if not payloads:
        raise AuditConfigError(
            f"no captured payload for decision {args.decision_id} (capture off, or unknown id)"
        )
    with HsmSession(HsmSettings.model_validate(dict(config.hsm)).resolve()) as session:
        opened = open_payloads(session, keys, payloads)
    print(json.dumps({part: body for part, body in opened}, indent=2, ensure_ascii=False))
    return 0
