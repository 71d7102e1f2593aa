"""Run the worker: uvicorn with mTLS (peer identity in the ASGI scope), plus an optional
plain-HTTP ops port for probes and scraping."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from inference.config import WorkerConfig
from inference.errors import WorkerConfigError

if TYPE_CHECKING:
    import uvicorn
    from starlette.applications import Starlette

    from pki.crl import RevocationChecker

__all__ = ["build_uvicorn_config", "serve"]

logger = logging.getLogger("bastion.worker")


def _revocation(crl: Path, ca: Path) -> RevocationChecker:
    # Every CA certificate of the file (ca-bundle.pem after a CA rotation), re-read as CRLs
    # change: the same checker the gateway builds (pki.crl).
    from pki.crl import RevocationChecker
    from pki.errors import CRLError

    try:
        return RevocationChecker.from_ca_file(crl, ca)
    except CRLError as exc:
        raise WorkerConfigError(f"server.tls.ca/server.tls.crl: {exc}") from None


def build_uvicorn_config(config: WorkerConfig, app: Starlette) -> uvicorn.Config:
    """The uvicorn config for the main listener (mTLS unless explicitly plain)."""
    import uvicorn

    from pki.asgi_tls import PeerPolicy, protocol_class
    from pki.tls import server_context

    server = config.server
    if server.tls is None:
        return uvicorn.Config(
            app,
            host=server.host,
            port=server.port,
            lifespan="on",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=10,
        )
    tls = server.tls
    context: ssl.SSLContext = server_context(cert=tls.cert, key=tls.key, ca=tls.ca)
    revocation = _revocation(tls.crl, tls.ca) if tls.crl is not None else None
    policy = PeerPolicy(trust_domain=tls.trust_domain, revocation=revocation)
    return uvicorn.Config(
        app,
        host=server.host,
        port=server.port,
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
        http=protocol_class(policy),
        ssl_context_factory=lambda _config, _default: context,
    )


def serve(config: WorkerConfig, *, ops_port: int | None = None) -> int:
    """Serve until SIGINT/SIGTERM or a failed boot; returns the exit status."""
    import uvicorn

    from inference.server import create_app, create_ops_app

    app = create_app(config)
    main = uvicorn.Server(build_uvicorn_config(config, app))
    state = app.state.worker
    failed: list[str] = []

    def on_failure(reason: str) -> None:
        failed.append(reason)
        main.should_exit = True

    state.on_failure = on_failure
    ops = None
    if ops_port is not None:
        ops = uvicorn.Server(
            uvicorn.Config(
                create_ops_app(state),
                host=config.server.host,
                port=ops_port,
                lifespan="off",
                access_log=False,
                log_config=None,
            )
        )

    async def run() -> None:
        ops_task = asyncio.create_task(ops.serve()) if ops is not None else None
        try:
            await main.serve()
        finally:
            if ops is not None and ops_task is not None:
                ops.should_exit = True
                await ops_task

    asyncio.run(run())
    if failed:
        logger.error("worker exited: %s", failed[0])
        return 1
    return 0
