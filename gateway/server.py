"""Build the gateway from its config and serve it: mTLS API port plus the plain ops port.

``bastion serve --config FILE`` calls :func:`serve`; tests use :class:`ServerThread` to run the
same thing on loopback sockets in a background thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from opentelemetry.sdk.trace import SpanProcessor

from gateway.app import Gateway, build_app, build_ops_app
from gateway.config import GatewayConfig, SecretRef, UpstreamConfig
from gateway.errors import ConfigError
from gateway.metrics import GatewayMetrics
from gateway.pipeline import AuditSink
from gateway.telemetry import Telemetry
from gateway.upstreams import OpenAIUpstream, UbiAIUpstream, Upstream
from pki.asgi_tls import ConnectionLimits, PeerPolicy, protocol_class
from pki.crl import RevocationChecker
from pki.errors import BastionError, CRLError
from pki.secret import Secret, SecretSourceError
from pki.signing import FileSigner, Signer
from pki.tls import count_handshake_alerts, server_context

__all__ = ["ServerThread", "build_gateway", "configure_logging", "resolve_secret", "serve"]

logger = logging.getLogger("bastion.server")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx2 logs every request URL at INFO; a UbiAI URL carries its token. Never let it through.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    logging.getLogger("httpcore2").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True  # Bastion writes its own access log
    # Each of the two uvicorn servers (API, ops) logs "Started/Finished server process" and
    # "Shutting down" on the same logger, so every line came twice; Bastion says where it
    # listens and that it stopped itself. uvicorn's warnings and errors still come through.
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)


def resolve_secret(ref: SecretRef, *, store: Any = None) -> Secret:
    """Resolve ``{env: VAR}``, ``{file: PATH}`` or ``secret:NAME`` into a :class:`Secret`."""
    try:
        return ref.resolve(store)
    except SecretSourceError as exc:
        raise ConfigError(f"api_key {ref.describe()}: {exc}") from None


def build_upstream(name: str, config: UpstreamConfig, secret_store: Any = None) -> Upstream:
    key = resolve_secret(config.api_key, store=secret_store) if config.api_key else None
    if config.type == "ubiai":
        return UbiAIUpstream(name, config, key)
    return OpenAIUpstream(name, config, key)


def build_gateway(
    config: GatewayConfig,
    *,
    metrics: GatewayMetrics | None = None,
    span_processor: SpanProcessor | None = None,
) -> Gateway:
    """Everything the app needs: upstream clients, router (policy + detection), audit trail."""
    from gateway.auditing import LogOnlyAudit, TrailAudit
    from gateway.routing import build_router, derive_key

    secret_store = None
    if config.secrets is not None:
        from gateway.secrets import open_secret_store  # loads the HSM layer only when configured

        secret_store = open_secret_store(config)
    upstreams = {
        name: build_upstream(name, up, secret_store) for name, up in config.upstreams.items()
    }
    metrics = metrics or GatewayMetrics()
    telemetry = Telemetry(config.tracing, metrics, extra_processor=span_processor)
    audit: AuditSink
    digest_key = None
    if config.audit is not None:
        from gateway.audit import load_digest_key, open_audit_trail

        audit_config = config.audit
        digest_key = load_digest_key(audit_config)
        sealer = _payload_sealer(config) if audit_config.capture_payloads else None
        trail = open_audit_trail(audit_config, _signer(config))
        audit = TrailAudit(
            trail, derive_key(digest_key, "audit-text-digest"), metrics, sealer=sealer
        )
    else:
        logger.warning(
            "no 'audit:' section: decisions are logged, not kept in a tamper-evident trail"
        )
        audit = LogOnlyAudit()
    hash_key = derive_key(digest_key, "sanitize-hash") if digest_key is not None else None
    router, policy_store = build_router(
        config, upstreams, metrics, hash_key=hash_key, telemetry=telemetry
    )
    gateway = Gateway(
        config=config,
        upstreams=upstreams,
        router=router,
        audit=audit,
        metrics=metrics,
        tracing=telemetry,
    )
    gateway.policy_store = policy_store
    if isinstance(audit, TrailAudit) and policy_store is not None:
        # Decision records keep digests of the headers the policy reads (policy replay).
        audit.record_headers_of(policy_store.header_names)
    return gateway


def _hsm_session(config: GatewayConfig, purpose: str) -> Any:
    from pki.hsm import HsmSession

    if config.hsm is None:
        raise ConfigError(f"{purpose} needs the HSM: add an 'hsm:' section")
    return HsmSession(config.hsm.resolve())


def _payload_sealer(config: GatewayConfig) -> Any:
    from gateway.audit.capture import PayloadSealer

    return PayloadSealer(_hsm_session(config, "audit.capture_payloads"))


def _signer(config: GatewayConfig) -> Signer:
    signing = config.signing
    if signing.hsm:
        from pki.hsm import HsmSigner

        signer: Signer = HsmSigner(_hsm_session(config, "signing.hsm"))
        return signer
    if signing.key_file is None:
        raise ConfigError(
            "the audit trail needs a checkpoint signing key: set signing.key_file (created if "
            "missing) or signing.hsm: true"
        )
    if not signing.key_file.exists():
        logger.warning("creating audit signing key %s", signing.key_file)
        return FileSigner.generate(signing.key_file, key_id=signing.key_id)
    return FileSigner.load(signing.key_file, key_id=signing.key_id)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit TCP_NODELAY on Linux: without it a small TLS response written as
    # several records waits ~40 ms for the peer's delayed ACK (Nagle).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


# A peer that does not answer our TLS close_notify within this is cut off: closing a connection
# (keep-alive expiry, shutdown, a refusal) must not wait on the peer (asyncio's default is 30 s).
TLS_CLOSE_TIMEOUT_S = 2.0


class _EdgeServer(uvicorn.Server):
    """uvicorn's server with Bastion's edge around it.

    - Signals are handled by :func:`_run`, not uvicorn (which re-raises SIGTERM after its
      shutdown, killing the process before the audit trail is closed).
    - TLS handshakes must finish within ``tls_handshake_timeout_s`` and closing waits at most
      :data:`TLS_CLOSE_TIMEOUT_S` for the peer (uvicorn leaves asyncio's 60 s / 30 s).
    - Shutdown (issue 14/16): stop accepting, close idle connections at once, run
      ``before_drain`` (the gateway signs the audit trail's closing checkpoint there), and only
      then wait, at most ``timeout_graceful_shutdown`` (``server.shutdown_grace_s``), for
      in-flight requests; uvicorn's own shutdown does the wait and cancels what is left.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        handshake_timeout_s: float | None = None,
        before_drain: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(config)
        self._handshake_timeout_s = handshake_timeout_s
        self._before_drain = before_drain

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if self.config.ssl is None or not sockets:
            await super().startup(sockets=sockets)
            return
        # uvicorn's startup with no socket, then the listeners with bounded TLS handshakes
        # (its own create_server call takes no handshake or close timeout).
        await super().startup(sockets=[])
        config = self.config

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            protocol: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=_loop,
            )
            return protocol

        loop = asyncio.get_running_loop()
        for sock in sockets:
            server = await loop.create_server(
                create_protocol,
                sock=sock,
                ssl=config.ssl,
                backlog=config.backlog,
                ssl_handshake_timeout=self._handshake_timeout_s,
                ssl_shutdown_timeout=TLS_CLOSE_TIMEOUT_S,
            )
            self.servers.append(server)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()  # stop accepting
        for connection in list(self.server_state.connections):
            connection.shutdown()  # idle: closed now; busy: closed after its answer
        if self._before_drain is not None:
            await self._before_drain()
        await super().shutdown(sockets=sockets)  # bounded wait for in-flight requests


@dataclass
class _Servers:
    main: uvicorn.Server
    main_socket: socket.socket
    ops: uvicorn.Server | None
    ops_socket: socket.socket | None


def _make_servers(gateway: Gateway) -> _Servers:
    config = gateway.config
    tls = config.tls
    ssl_ctx = server_context(cert=tls.cert, key=tls.key, ca=tls.ca)
    count_handshake_alerts(
        ssl_ctx, lambda reason: gateway.metrics.tls_handshake_failures.labels(reason).inc()
    )
    revocation = None
    if tls.crl is not None:
        revocation = _checker_from_ca_file(tls.crl, tls.ca)
    policy = PeerPolicy(
        trust_domain=tls.trust_domain,
        revocation=revocation,
        on_refused=lambda reason: gateway.metrics.tls_refused.labels(reason).inc(),
    )
    server = config.server
    main_sock = _bind(server.host, server.port)
    main_config = uvicorn.Config(
        build_app(gateway),
        http=protocol_class(policy, _connection_limits(gateway)),
        ssl_context_factory=lambda _config, _default: ssl_ctx,
        lifespan="off",
        access_log=False,
        log_config=None,
        timeout_keep_alive=server.keep_alive_timeout_s,
        timeout_graceful_shutdown=server.shutdown_grace_s,
    )
    main = _EdgeServer(
        main_config,
        handshake_timeout_s=server.tls_handshake_timeout_s,
        before_drain=lambda: _before_drain(gateway),
    )
    ops = ops_sock = None
    if server.ops_port is not None:
        ops_sock = _bind(server.ops_host, server.ops_port)
        ops = _EdgeServer(
            uvicorn.Config(
                build_ops_app(gateway),
                http=protocol_class(None, _connection_limits(gateway)),
                lifespan="off",
                access_log=False,
                log_config=None,
                timeout_keep_alive=server.keep_alive_timeout_s,
                timeout_graceful_shutdown=server.shutdown_grace_s,
            )
        )
    return _Servers(main, main_sock, ops, ops_sock)


def _connection_limits(gateway: Gateway) -> ConnectionLimits:
    server = gateway.config.server
    return ConnectionLimits(
        header_read_timeout_s=server.header_read_timeout_s,
        body_read_timeout_s=server.body_read_timeout_s,
        max_connections=server.max_connections,
        on_dropped=lambda reason: gateway.metrics.tls_refused.labels(reason).inc(),
    )


async def _before_drain(gateway: Gateway) -> None:
    """Shutdown, after accepting stopped and before in-flight requests are waited for: report
    not ready and sign the audit trail's closing checkpoint now, so a kill that follows the
    grace period cannot lose it (the trail signs once more when it closes)."""
    gateway.ready = False
    checkpoint = getattr(gateway.audit, "checkpoint", None)  # absent without a trail
    if checkpoint is None:
        return
    grace = gateway.config.server.shutdown_grace_s
    try:
        await asyncio.wait_for(checkpoint(), timeout=max(grace, 1.0))
    except (BastionError, TimeoutError) as exc:
        gateway.metrics.audit_failures.inc()
        logger.error("closing audit checkpoint not signed before draining (%s)", type(exc).__name__)
    else:
        logger.info("audit trail: closing checkpoint signed; draining in-flight requests")


def _checker_from_ca_file(crl: Path, ca: Path) -> RevocationChecker:
    # Every CA certificate of the file (ca-bundle.pem after a rotation), re-read as CRLs change:
    # the same checker the worker builds (pki.crl).
    try:
        return RevocationChecker.from_ca_file(crl, ca)
    except CRLError as exc:
        raise ConfigError(f"tls.ca/tls.crl: {exc}") from None


async def _run(
    servers: _Servers,
    gateway: Gateway,
    on_started: Callable[[], None] | None = None,
    *,
    handle_signals: bool = False,
) -> None:
    if handle_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, _request_exit, servers.main, sig)
    gateway.start()
    ops_task = None
    if servers.ops is not None and servers.ops_socket is not None:
        ops_task = asyncio.create_task(servers.ops.serve(sockets=[servers.ops_socket]))
    main_task = asyncio.create_task(servers.main.serve(sockets=[servers.main_socket]))
    if on_started is not None:
        while not servers.main.started and not main_task.done():
            await asyncio.sleep(0.01)
        on_started()
    try:
        await main_task
    finally:
        if servers.ops is not None and ops_task is not None:
            servers.ops.should_exit = True
            await ops_task
        await gateway.aclose()


def _request_exit(server: uvicorn.Server, sig: signal.Signals) -> None:
    if server.should_exit:  # a second Ctrl-C: stop waiting for open connections
        server.force_exit = True
    logger.info("received %s: shutting down (audit trail signs a closing checkpoint)", sig.name)
    server.should_exit = True


def serve(config: GatewayConfig) -> int:
    """Run until SIGINT/SIGTERM. Returns the exit status."""
    configure_logging(config.server.log_level)
    try:
        gateway = build_gateway(config)
        servers = _make_servers(gateway)
    except BastionError:
        raise
    addr = f"https://{config.server.host}:{servers.main_socket.getsockname()[1]}"
    logger.info("bastion gateway listening on %s (mTLS)", addr)
    if servers.ops_socket is not None:
        host, port = servers.ops_socket.getsockname()[:2]
        logger.info("ops endpoints (/healthz /readyz /metrics) on http://%s:%d", host, port)
    if gateway.policy_store is not None:
        gateway.policy_store.install_sighup()  # `kill -HUP` reloads the policy now
    asyncio.run(_run(servers, gateway, handle_signals=True))
    logger.info("bastion gateway stopped")
    # Everything is closed (trail signed and closed, upstreams, pools): the interpreter's
    # teardown collection over the detection stack's object graph (spaCy, Presidio) took 3-6 s
    # of a bounded shutdown for nothing. Frozen objects are skipped by it; memory goes back to
    # the OS with the process.
    gc.freeze()
    return 0


class ServerThread:
    """The gateway served from a background thread on loopback (tests, dev, benchmarks)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._servers = _make_servers(gateway)
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="bastion-gateway", daemon=True)
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        port: int = self._servers.main_socket.getsockname()[1]
        return port

    @property
    def ops_port(self) -> int | None:
        if self._servers.ops_socket is None:
            return None
        port: int = self._servers.ops_socket.getsockname()[1]
        return port

    def _main(self) -> None:
        try:
            asyncio.run(_run(self._servers, self.gateway, self._started.set))
        except BaseException as exc:  # noqa: BLE001 - handed to the starting thread, re-raised there
            self._error = exc
            self._started.set()

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError("gateway did not start in time")
        if self._error is not None:
            raise RuntimeError("gateway failed to start") from self._error
        return self

    def stop(self, timeout: float = 15.0) -> None:
        self._servers.main.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
