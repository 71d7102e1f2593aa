"""``bastion serve --config FILE``: run the gateway (mTLS API port + plain ops port).

``--check`` loads and validates the config (every section typed; an unknown key is an error with
``file:line:col``), then looks up every secret it names and logs in to the HSM, saying per
reference found or not (never the value). Exit 1 if anything is wrong: what ``--check`` accepts,
``serve`` starts with.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pki.errors import BastionError

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="run the gateway")
    parser.add_argument("--config", type=Path, required=True, help="gateway config YAML")
    parser.add_argument(
        "--check",
        action="store_true",
        help="validate the config, look up every secret it names and the HSM, print a summary, exit",
    )
    parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    # Imported here, not at the top: `bastion serve --help` need not load the config models.
    from gateway.config import load_config

    config = load_config(args.config)
    if args.check:
        return _check(args.config, config)
    from gateway.server import serve

    return serve(config)


def _check(path: Path, config: GatewayConfig) -> int:
    from gateway.cli.doctor import hsm_status
    from gateway.secrets import check_secret_references

    server = config.server
    print(f"{path}: config valid")
    print(f"  listen: {server.host}:{server.port} (mTLS), ops port: {server.ops_port}")
    print(f"  models: {', '.join(config.models)}")
    for name, upstream in config.upstreams.items():
        key = upstream.api_key.describe() if upstream.api_key else "no key"
        print(f"  upstream {name}: {upstream.kind}, {key}")
    failed = 0
    if config.hsm is not None:
        try:
            print(f"  hsm: {hsm_status(config.hsm)}")
        except BastionError as exc:  # token, PIN, module or keys refused: reported, fails
            failed += 1
            print(f"  hsm: FAILED: {_one_line(exc)}")
    for check in check_secret_references(config):
        failed += not check.found
        print(f"  secret {check}")
    if failed:
        print(f"{path}: NOT OK ({failed} problem{'s' if failed > 1 else ''})")
        return 1
    print(f"{path}: OK")
    return 0


def _one_line(exc: BaseException) -> str:
    return str(exc).replace("\n", "; ") or type(exc).__name__
