"""``bastion serve --config FILE``: run the gateway (mTLS API port + plain ops port)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.config import load_config


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("serve", help="run the gateway")
    parser.add_argument("--config", type=Path, required=True, help="gateway config YAML")
    parser.add_argument(
        "--check", action="store_true", help="load and validate the config, print a summary, exit"
    )
    parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.check:
        from gateway.server import upstream_secrets_summary

        print(f"{args.config}: OK")
        print(
            f"  listen: {config.server.host}:{config.server.port} (mTLS), ops port: {config.server.ops_port}"
        )
        print(f"  models: {', '.join(config.models)}")
        for line in upstream_secrets_summary(config.upstreams):
            print(f"  upstream {line}")
        return 0
    from gateway.server import serve

    return serve(config)
