"""``bastion bundle``: the signed offline bundle for air-gapped sites (issue #8).

``build --out DIR`` builds one bundle (see :mod:`gateway.bundle`), signed with an Ed25519 file key
(``--signing-key``, development) or the HSM's signing key (``--hsm``). ``lock --out FILE`` writes
the hash-pinned requirements lock from this venv's exact versions (``make lock``). ``keygen``
makes a development signing key; ``pubkey`` exports the public key the operator carries in, with
the fingerprint to check out of band. Builds run from a source checkout (``--source``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from gateway.bundle.errors import BundleLayoutError
from pki.secret import Secret, secret_from_env_or_file
from pki.signing import FileSigner, Signer

__all__ = ["register"]

REPO = Path(__file__).resolve().parents[2]
ENV_PASSPHRASE = "BASTION_BUNDLE_KEY_PASSPHRASE"  # noqa: S105 (a variable name)
_KEY_ID = "bastion-bundle"


def register(subparsers: Any) -> None:
    from pki.cli.hsm import add_hsm_options

    parser = subparsers.add_parser("bundle", help="signed offline bundle: build, lock, keygen")
    sub = parser.add_subparsers(dest="bundle_command", metavar="ACTION", required=True)

    build = sub.add_parser("build", help="build one signed offline bundle")
    build.add_argument("--out", type=Path, required=True, help="a new (or empty) directory")
    build.add_argument("--with-model", type=Path, metavar="ARTIFACT", help="encrypted model")
    build.add_argument(
        "--without-worker",
        action="store_true",
        help="leave out the worker's wheels (torch, transformers, ...): a gateway-only bundle",
    )
    build.add_argument("--cache", type=Path, default=Path("var/bundle-cache"))
    build.add_argument("--lock", type=Path, help="default: SOURCE/deploy/airgap/requirements.lock")
    build.add_argument("--source", type=Path, default=REPO, help="Bastion source checkout")
    build.add_argument("--json", action="store_true", help="print a JSON summary")
    _add_key_options(build, add_hsm_options)
    build.set_defaults(func=_build)

    lock = sub.add_parser("lock", help="write the hash-pinned requirements lock (make lock)")
    lock.add_argument("--out", type=Path, default=REPO / "deploy" / "airgap" / "requirements.lock")
    lock.add_argument("--source", type=Path, default=REPO, help="Bastion source checkout")
    lock.set_defaults(func=_lock)

    keygen = sub.add_parser("keygen", help="create an Ed25519 development signing key")
    keygen.add_argument("--out", type=Path, required=True, help="private key file (0600)")
    keygen.add_argument(
        "--passphrase-file", type=Path, help=f"encrypt it (or env {ENV_PASSPHRASE})"
    )
    keygen.set_defaults(func=_keygen)

    pubkey = sub.add_parser("pubkey", help="export the public key and print its fingerprint")
    pubkey.add_argument("--out", type=Path, help="write the PEM here (default: stdout)")
    _add_key_options(pubkey, add_hsm_options)
    pubkey.set_defaults(func=_pubkey)


def _add_key_options(parser: argparse.ArgumentParser, add_hsm_options: Any) -> None:
    keys = parser.add_mutually_exclusive_group(required=True)
    keys.add_argument("--signing-key", type=Path, help="Ed25519 PEM key file (development)")
    keys.add_argument("--hsm", action="store_true", help="the HSM's signing key (production)")
    parser.add_argument(
        "--passphrase-file",
        type=Path,
        help=f"passphrase of --signing-key (or env {ENV_PASSPHRASE})",
    )
    add_hsm_options(parser)


def _passphrase(args: argparse.Namespace) -> Secret | None:
    if args.passphrase_file is not None:
        return secret_from_env_or_file(file=args.passphrase_file)
    if os.environ.get(ENV_PASSPHRASE):
        return secret_from_env_or_file(env=ENV_PASSPHRASE)
    return None


def _signer(args: argparse.Namespace) -> Signer:
    if args.hsm:
        from pki.cli.hsm import hsm_config_from_args
        from pki.hsm import HsmSession, HsmSigner

        session = HsmSession(hsm_config_from_args(args))
        signer: Signer = HsmSigner(session)
        return signer
    return FileSigner.load(args.signing_key, key_id=_KEY_ID, passphrase=_passphrase(args))


def _progress(message: str) -> None:
    print(f"[bastion bundle] {message}", file=sys.stderr, flush=True)


def _build(args: argparse.Namespace) -> int:
    from gateway.bundle import BuildOptions, build_bundle

    source: Path = args.source.resolve()
    if not (source / "deploy" / "airgap" / "install.sh").is_file():
        raise BundleLayoutError(
            f"{source} is not a Bastion source checkout (no deploy/airgap/install.sh); "
            "build bundles from the repository with --source"
        )
    options = BuildOptions(
        out=args.out.resolve(),
        repo=source,
        lock=(args.lock or source / "deploy" / "airgap" / "requirements.lock").resolve(),
        cache=args.cache.resolve(),
        python=Path(sys.executable),
        with_model=args.with_model.resolve() if args.with_model else None,
        without_worker=args.without_worker,
    )
    progress = _progress if sys.stderr.isatty() else (lambda _: None)
    summary = build_bundle(options, _signer(args), progress)
    if args.json:
        print(json.dumps(summary.to_json(), sort_keys=True))
    else:
        print(f"bundle {summary.out}: {summary.name} {summary.version}")
        print(
            f"  {summary.files} files, {summary.bytes / 1e6:.1f} MB "
            f"({summary.wheels} wheels, {summary.debs} debs"
            f"{', worker left out' if summary.without_worker else ''}"
            f"{', model ' + summary.model if summary.model else ''}), {summary.seconds:.1f} s"
        )
        print(f"  signed {summary.algorithm} by {summary.key_id}")
        print(f"  public key sha256:{summary.public_key_sha256} (check it out of band)")
    return 0


def _lock(args: argparse.Namespace) -> int:
    from gateway.bundle import generate_lock, render_lock

    entries = generate_lock(args.source.resolve() / "pyproject.toml", Path(sys.executable))
    args.out.write_text(render_lock(entries))
    groups: dict[str, int] = {}
    for entry in entries:
        groups[entry.group] = groups.get(entry.group, 0) + 1
    counts = ", ".join(f"{n} {g}" for g, n in sorted(groups.items()))
    print(f"{args.out}: {len(entries)} distributions ({counts})")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from gateway.bundle import public_key_fingerprint

    signer = FileSigner.generate(args.out, key_id=_KEY_ID, passphrase=_passphrase(args))
    pub = args.out.with_name(args.out.name + ".pub.pem")
    pub.write_bytes(signer.public_key_pem())
    print(f"private key: {args.out} (0600); public key: {pub}")
    print(f"fingerprint: sha256:{public_key_fingerprint(signer.public_key_pem())}")
    return 0


def _pubkey(args: argparse.Namespace) -> int:
    from gateway.bundle import public_key_fingerprint

    signer = _signer(args)
    pem = signer.public_key_pem()
    if args.out is None:
        sys.stdout.write(pem.decode())
    else:
        args.out.write_bytes(pem)
    print(
        f"fingerprint: sha256:{public_key_fingerprint(pem)} ({signer.algorithm})", file=sys.stderr
    )
    return 0
