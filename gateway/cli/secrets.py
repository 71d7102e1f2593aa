"""``bastion secrets``: put (value from stdin, never argv), list (names only), delete.

The store file comes from ``--store`` or ``BASTION_SECRETS_FILE``; the HSM from the ``--hsm-*``
options or ``BASTION_HSM_*``. Gateway config refers to a stored value as ``"secret:NAME"``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from pki.cli.hsm import add_hsm_options, hsm_config_from_args

__all__ = ["ENV_SECRETS_FILE", "register"]

ENV_SECRETS_FILE = "BASTION_SECRETS_FILE"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("secrets", help="managed-API keys in the HSM: put, list")
    sub = parser.add_subparsers(dest="secrets_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--store", type=Path, help=f"secrets file (env {ENV_SECRETS_FILE})")
        add_hsm_options(p)

    put = sub.add_parser("put", help="store a secret read from stdin (e.g. `... < key.txt`)")
    put.add_argument("name")
    common(put)
    put.set_defaults(func=_put)

    listing = sub.add_parser("list", help="list secret names (never values)")
    common(listing)
    listing.set_defaults(func=_list)

    delete = sub.add_parser("delete", help="remove a secret")
    delete.add_argument("name")
    common(delete)
    delete.set_defaults(func=_delete)


def _store_path(args: argparse.Namespace) -> Path:
    from gateway.secrets import SecretStoreError

    path = args.store or (
        Path(os.environ[ENV_SECRETS_FILE]) if os.environ.get(ENV_SECRETS_FILE) else None
    )
    if path is None:
        raise SecretStoreError(f"no secrets file named: give --store or set {ENV_SECRETS_FILE}")
    return Path(path)


def _put(args: argparse.Namespace) -> int:
    from gateway.secrets import MAX_SECRET_BYTES, HsmSecretStore, SecretStoreError
    from pki.hsm import HsmSession
    from pki.secret import Secret

    if sys.stdin.isatty():
        print(f"enter the value of {args.name!r}, then Ctrl-D:", file=sys.stderr)
    raw = sys.stdin.buffer.read(MAX_SECRET_BYTES + 1)
    if len(raw) > MAX_SECRET_BYTES:
        raise SecretStoreError(f"value on stdin exceeds {MAX_SECRET_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretStoreError("value on stdin is not UTF-8 text") from None
    value = Secret(text.removesuffix("\n").removesuffix("\r"))
    with HsmSession(hsm_config_from_args(args)) as session:
        HsmSecretStore(_store_path(args), session).put(args.name, value)
    print(f'stored secret {args.name!r}; refer to it as "secret:{args.name}"')
    return 0


def _list(args: argparse.Namespace) -> int:
    from gateway.secrets import HsmSecretStore
    from pki.hsm import HsmSession

    with HsmSession(hsm_config_from_args(args)) as session:
        for name in HsmSecretStore(_store_path(args), session).names():
            print(name)
    return 0


def _delete(args: argparse.Namespace) -> int:
    from gateway.secrets import HsmSecretStore
    from pki.hsm import HsmSession

    with HsmSession(hsm_config_from_args(args)) as session:
        HsmSecretStore(_store_path(args), session).delete(args.name)
    print(f"deleted secret {args.name!r}")
    return 0
