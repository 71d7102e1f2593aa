"""``bastion audit``: verify, export, tail, checkpoint, pubkey and prune the audit trail.

The store comes from ``--config FILE`` (the gateway config's ``audit:`` section), or directly
from ``--sqlite PATH`` / ``--dsn DSN`` (a DSN's password is better left to ``PGPASSWORD`` or
``~/.pgpass``: the command line is visible in ``ps``).

``verify`` exits 0 when every record chains and is covered by a valid signed checkpoint, 1 when
something was altered (the first problem is named), 2 when records after the last checkpoint
are not yet covered (pass ``--allow-uncovered`` to accept that for a running gateway).
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
        help="PEM public key the checkpoints must be signed with (repeatable; default: the "
        "keys recorded in the store, which proves consistency but not authorship)",
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

    pubkey = sub.add_parser("pubkey", help="print the checkpoint public key(s) as PEM")
    source = pubkey.add_mutually_exclusive_group(required=True)
    source.add_argument("--signing-key", type=Path, help="derive it from this Ed25519 key file")
    source.add_argument("--config", type=Path, help="the keys recorded in the configured store")
    source.add_argument("--sqlite", type=Path, metavar="PATH")
    source.add_argument("--dsn")
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
    from pydantic import ValidationError
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    from gateway.audit import AuditConfig

    try:
        document = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AuditConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise AuditConfigError(f"{path}{where}: not valid YAML") from None
    section = document.get("audit") if isinstance(document, dict) else None
    if not isinstance(section, dict):
        raise AuditConfigError(f"{path} has no 'audit:' section; add one or use --sqlite/--dsn")
    if isinstance(section.get("path"), str) and not Path(section["path"]).is_absolute():
        section["path"] = str(path.parent / section["path"])
    try:
        return AuditConfig(**section)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "audit"
        raise AuditConfigError(f"{path}: audit.{field}: {first['msg']}") from None


def _open(args: argparse.Namespace) -> Store:
    from gateway.audit import AuditConfig, open_store
    from pki.secret import Secret

    if args.config is not None:
        return open_store(_config_from_yaml(args.config))
    if args.sqlite is not None:
        return open_store(AuditConfig(backend="sqlite", path=args.sqlite))
    return open_store(AuditConfig(backend="postgres", dsn=Secret(args.dsn)))


def _signer(path: Path, passphrase_file: Path | None) -> FileSigner:
    from pki.secret import secret_from_env_or_file
    from pki.signing import FileSigner

    passphrase = secret_from_env_or_file(file=passphrase_file) if passphrase_file else None
    return FileSigner.load(path, key_id=path.stem, passphrase=passphrase)


# -- actions ----------------------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> int:
    from gateway.audit import verify_store

    keys = []
    for path in args.pubkey:
        try:
            keys.append(path.read_bytes())
        except OSError as exc:
            raise AuditConfigError(f"cannot read public key {path}: {exc.strerror}") from None
    pinned = None
    if args.checkpoint is not None:
        try:
            pinned = args.checkpoint.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise AuditConfigError(f"cannot read checkpoint {args.checkpoint}: {exc}") from None
    store = _open(args)
    try:
        report = verify_store(store, public_keys=keys or None, pinned=pinned)
    finally:
        store.close()
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


def _pubkey(args: argparse.Namespace) -> int:
    if args.signing_key is not None:
        sys.stdout.write(_signer(args.signing_key, args.passphrase_file).public_key_pem().decode())
        return 0
    store = _open(args)
    try:
        keys = store.keys()
    finally:
        store.close()
    if not keys:
        raise AuditConfigError("the trail has no checkpoint key recorded yet")
    for key in keys:
        print(f"# {key.name} {key.algorithm} key id {key.key_id_hex}", file=sys.stderr)
        sys.stdout.write(key.public_key_pem.decode())
    return 0


def _prune(args: argparse.Namespace) -> int:
    from gateway.audit import prune_store
    from gateway.audit._export import normalize_time

    before = normalize_time(args.before, option="--before")
    signer = _signer(args.signing_key, args.passphrase_file)
    store = _open(args)
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
