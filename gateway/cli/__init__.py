"""The ``bastion`` command.

Each subcommand lives in its own module under ``gateway/cli/`` and exposes
``register(subparsers)``; the module adds its parser and sets ``func`` (a callable taking the
parsed ``argparse.Namespace`` and returning an exit code). Modules import heavy dependencies
(torch, Presidio) inside their functions so that ``bastion --help`` stays fast.

Errors rooted at :class:`pki.errors.BastionError` are printed as ``bastion: error: …`` with exit
status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from pki.errors import BastionError

__all__ = ["main"]

# Order is the order shown in --help.
_SUBCOMMAND_MODULES = (
    "serve",
    "dev",
    "pki",
    "policy",
    "audit",
    "hsm",
    "secrets",
    "model",
    "worker",
    "bundle",
    "doctor",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bastion",
        description="Bastion: compliance-first private inference gateway.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _SUBCOMMAND_MODULES:
        module_name = f"{__name__}.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except BastionError as exc:
        print(f"bastion: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
