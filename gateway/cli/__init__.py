"""The ``bastion`` command: a dispatcher, nothing more.

Each command is owned by the package it belongs to and lives there as a module with
``register(subparsers)``, which adds the command's parser and sets ``func`` (a callable taking
the parsed ``argparse.Namespace`` and returning an exit code)::

    serve, dev, doctor          gateway/cli/{serve,dev,doctor}.py     the gateway service
    policy, audit, secrets      gateway/cli/{policy,audit,secrets}.py
    pki                         gateway/cli/pki.py                    the internal CA
    hsm                         pki/cli/hsm.py                        the HSM token and keys
    model, worker               inference/cli/{model,worker}.py       the on-prem worker
    bundle                      gateway/cli/bundle.py                 the offline bundle

Start-up loads only the command being run (issue #16: ``bastion --help`` listed every command by
importing all of them, 0.44 s before ``audit verify`` read a record). :data:`COMMANDS` names each
command with its one-line help and a loader; the loader imports the command's module with a
plain ``import`` statement, so mypy checks every seam and a missing module is an ``ImportError``,
never a command silently left out. ``bastion --help`` loads no command at all; the others appear
in the parser as placeholders carrying their help line.

Errors rooted at :class:`pki.errors.BastionError` are printed as ``bastion: error: …`` with exit
status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pki.errors import BastionError

__all__ = ["COMMANDS", "Command", "build_parser", "main"]

Register = Callable[[Any], None]  # register(subparsers) of one command's module


@dataclass(frozen=True)
class Command:
    """One ``bastion`` command: its name, its ``--help`` line, and how to load its module."""

    name: str
    help: str
    load: Callable[[], Register]


# Each loader imports its module statically (no import by string: mypy sees the seam).
def _serve() -> Register:
    from gateway.cli import serve

    return serve.register


def _dev() -> Register:
    from gateway.cli import dev

    return dev.register


def _pki() -> Register:
    from gateway.cli import pki

    return pki.register


def _policy() -> Register:
    from gateway.cli import policy

    return policy.register


def _audit() -> Register:
    from gateway.cli import audit

    return audit.register


def _hsm() -> Register:
    from pki.cli import hsm

    return hsm.register


def _secrets() -> Register:
    from gateway.cli import secrets

    return secrets.register


def _model() -> Register:
    from inference.cli import model

    return model.register


def _worker() -> Register:
    from inference.cli import worker

    return worker.register


def _bundle() -> Register:
    from gateway.cli import bundle

    return bundle.register


def _doctor() -> Register:
    from gateway.cli import doctor

    return doctor.register


# Order is the order shown in --help. Each help line is the one its module registers (a test
# holds the two equal).
COMMANDS: tuple[Command, ...] = (
    Command("serve", "run the gateway", _serve),
    Command("dev", "development site: build and start (make run)", _dev),
    Command("pki", "internal CA: init, issue, revoke, crl, list", _pki),
    Command("policy", "lint, test and explain routing policies", _policy),
    Command("audit", "audit trail: verify, export, tail, checkpoint, pubkey, prune", _audit),
    Command("hsm", "HSM token and keys: init, status", _hsm),
    Command("secrets", "managed-API keys in the HSM: put, list", _secrets),
    Command("model", "model artifacts: import-gguf, encrypt, inspect, quantize", _model),
    Command(
        "worker",
        "run the on-prem inference worker (OpenAI-compatible, mTLS, continuous batching)",
        _worker,
    ),
    Command("bundle", "signed offline bundle: build, lock, keygen", _bundle),
    Command("doctor", "self-check an installation", _doctor),
)
_BY_NAME = {command.name: command for command in COMMANDS}


def _command_named(argv: Sequence[str]) -> Command | None:
    """The command ``argv`` runs: its first word (the top level takes no option but -h)."""
    for word in argv:
        if not word.startswith("-"):
            return _BY_NAME.get(word)
    return None


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser for ``argv``: the command it names fully registered, the others listed."""
    parser = argparse.ArgumentParser(
        prog="bastion",
        description="Bastion: compliance-first private inference gateway.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = _command_named(argv)
    for command in COMMANDS:
        if command is chosen:
            command.load()(subparsers)
        else:
            subparsers.add_parser(command.name, help=command.help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(args_list).parse_args(args_list)
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
