"""``bastion worker --config FILE``: run the on-prem inference worker (``inference``)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger("bastion.worker")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run the on-prem inference worker (OpenAI-compatible, mTLS, continuous batching)",
    )
    parser.add_argument("--config", type=Path, required=True, metavar="FILE", help="worker YAML")
    parser.add_argument(
        "--ops-port",
        type=int,
        default=None,
        metavar="PORT",
        help="also serve /healthz, /readyz and /metrics over plain HTTP on this port (probes)",
    )
    parser.add_argument(
        "--check", action="store_true", help="validate the config for this machine and exit"
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from inference.config import check_runtime, load_config

    config = load_config(args.config)
    if args.check:
        import torch

        device = check_runtime(config.runtime, cuda_available=torch.cuda.is_available())
        print(f"worker config {args.config} is valid for device {device}")
        return 0
    from inference.serve import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # The worker runs two uvicorn servers (API, ops) that log their start and stop lines on the
    # same logger, so each came twice; the worker says where it listens itself.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    server = config.server
    scheme = "http" if server.insecure_plain_http else "https"
    ops = f", ops endpoints on http://{server.host}:{args.ops_port}" if args.ops_port else ""
    logger.info("worker listening on %s://%s:%d%s", scheme, server.host, server.port, ops)
    return serve(config, ops_port=args.ops_port)
