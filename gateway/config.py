"""The gateway's configuration: one YAML file, loaded into frozen typed models.

Unknown keys are errors (a misspelled ``max_body_byte:`` must not silently do nothing) and every
error names ``file:line:col`` and the key. Relative paths are resolved against the config file's
directory. Secrets (API keys, tokens) are never written in the file: a value is a reference,
``{env: VAR}``, ``{file: PATH}`` or ``"secret:NAME"`` (the HSM-backed secret store), resolved at
startup into :class:`pki.secret.Secret`.

Example: ``deploy/config.example.yaml``; the dev site (``make run``) writes one to ``var/dev``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.audit import AuditConfig
from gateway.errors import ConfigError
from gateway.telemetry import TracingConfig
from gateway.vocabulary import RouteKind
from pki.hsm import HsmSettings
from pki.secretref import SecretRef
from pki.yamlfile import PathPart, YamlDocument, YamlFileError, read_yaml_file, validation_issues

__all__ = [
    "AuditConfig",
    "AuthorizationRule",
    "CircuitConfig",
    "GatewayConfig",
    "HsmSettings",
    "LimitsConfig",
    "ModelConfig",
    "RateLimitRule",
    "SecretRef",
    "SecretStoreConfig",
    "ServerConfig",
    "SigningConfig",
    "TLSConfig",
    "TimeoutConfig",
    "UbiAIOptions",
    "UpstreamConfig",
    "UpstreamTLS",
    "load_config",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Frozen):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8443
    # Plain-HTTP listener for kubelet probes and Prometheus: /healthz, /readyz, /metrics only.
    # Null disables it; the same three paths are always served on the mTLS port as well.
    ops_host: str = "127.0.0.1"
    ops_port: Annotated[int, Field(ge=0, le=65535)] | None = 9464
    access_log: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Bounded pool for blocking work (detection, PKCS#11) off the event loop.
    worker_threads: Annotated[int, Field(ge=1, le=256)] = 8
    # Connection limits of the HTTP edge (both ports), so a slow or idle client cannot hold
    # sockets (slowloris). Each is an overall deadline, not a per-read timeout.
    # TLS handshake done within this, else the socket is closed (asyncio's default is 60 s).
    tls_handshake_timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0
    # From a connection's first byte (or its TLS handshake) to the end of the request headers.
    header_read_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    # From the end of the headers to the end of the body: 1 MiB (max_body_bytes) in 30 s is a
    # 35 KB/s floor, far below any internal network.
    body_read_timeout_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    # Idle time between requests on a keep-alive connection before the gateway closes it.
    keep_alive_timeout_s: Annotated[int, Field(ge=1, le=600)] = 30
    # Open connections per listener; one more gets 503 and is closed before any HTTP is read.
    max_connections: Annotated[int, Field(ge=1, le=100_000)] = 1024
    # SIGTERM: stop accepting, close idle connections, sign the audit checkpoint, then wait at
    # most this long for in-flight requests (below Kubernetes' 30 s terminationGracePeriod and
    # uvicorn's 10 s, so the closing checkpoint is never lost to the kill that follows).
    shutdown_grace_s: Annotated[int, Field(ge=0, le=300)] = 5


class TLSConfig(_Frozen):
    cert: Path
    key: Path
    ca: Path
    crl: Path | None = None  # checked on each new connection; strongly recommended
    trust_domain: str = "bastion.internal"


class LimitsConfig(_Frozen):
    """Named limits on every unbounded input. Each refusal says which limit and its value."""

    max_body_bytes: Annotated[int, Field(ge=1024)] = 1_048_576  # 413 above this
    max_messages: Annotated[int, Field(ge=1)] = 256
    max_text_chars: Annotated[int, Field(ge=1)] = 400_000  # all texts of one request together
    max_tokens: Annotated[int, Field(ge=1)] = 8192  # cap on max_tokens / max_completion_tokens
    detect_timeout_s: Annotated[float, Field(gt=0)] = 5.0  # waiting for the detector → 503
    # Detection jobs queued or running, all callers together; beyond it 503 detector_busy at
    # once: a queue that cannot grow without bound (gateway.detect.pool).
    max_concurrent_detections: Annotated[int, Field(ge=1)] = 64
    # Detection worker processes (the GIL makes threads one core wide for detection). Null: one
    # per CPU core the gateway may run on (sched_getaffinity). Each holds a spaCy model (~150 MB).
    detect_processes: Annotated[int, Field(ge=1, le=64)] | None = None
    # Text characters one identity may have queued or in detection at once (its fair share):
    # beyond it that caller gets 503 detector_busy while others go on (issue #14: 12 large
    # requests must not make every caller wait). Default = max_text_chars: one largest request,
    # or a hundred 4 KiB ones; a request is always admitted when its caller has none in flight.
    detect_identity_max_chars: Annotated[int, Field(ge=1)] = 400_000
    # Unknown top-level request fields allowed through as *text* (scanned and sanitized like
    # any text); any other unknown field is a 400 naming it. Lowercase names (issue 13).
    passthrough_fields: tuple[str, ...] = ()


class TimeoutConfig(_Frozen):
    connect: Annotated[float, Field(gt=0)] = 5.0
    read: Annotated[float, Field(gt=0)] = 120.0
    write: Annotated[float, Field(gt=0)] = 30.0
    pool: Annotated[float, Field(gt=0)] = 5.0
    # Overall deadline of one upstream call: every retry, the status, the whole JSON body or the
    # whole stream. ``read`` restarts at each byte, so alone it lets a drip of 1 byte/s hold a
    # request for ever (issue 14). 600 s: the longest answer limits.max_tokens (8192) allows at
    # ~15 tokens/s, a loaded on-prem worker; OpenAI's own SDK waits 600 s too. Lower it for
    # managed APIs if their answers are short.
    total: Annotated[float, Field(gt=0)] = 600.0


class CircuitConfig(_Frozen):
    failure_threshold: Annotated[int, Field(ge=1)] = 5  # consecutive failures that open it
    reset_after_s: Annotated[float, Field(gt=0)] = 30.0  # then one trial request is let through


class UpstreamTLS(_Frozen):
    ca: Path | None = None  # None: the system trust store (managed APIs)
    cert: Path | None = None  # client certificate for mTLS to Bastion's own workers
    key: Path | None = None


class UbiAIOptions(_Frozen):
    """The ``ubiai:`` options of a UbiAI upstream (ignored by other types)."""

    monitor_model: bool = False
    knowledge_base_ids: tuple[str, ...] = ()
    session_id: str | None = None  # None: a fresh id per request
    response_field: str = "output"  # the answer's field in UbiAI's JSON reply


class UpstreamConfig(_Frozen):
    kind: RouteKind
    type: Literal["openai", "ubiai"] = "openai"
    # openai: the base URL ending in /v1. ubiai: the endpoint URL (the token is appended to it).
    base_url: str | list[str]
    api_key: SecretRef | None = None  # openai: Bearer key; ubiai: the URL token
    model_map: Mapping[str, str] = Field(default_factory=dict)  # alias -> upstream model name
    timeout: TimeoutConfig = TimeoutConfig()
    max_connections: Annotated[int, Field(ge=1)] = 100
    # Largest answer read from this upstream, in decoded bytes: a JSON body, or all the events of
    # one stream together; past it the call fails with 502 upstream_answer_too_large and the
    # connection is dropped (RSS stays bounded). 16 MiB: 8192 tokens with top-20 logprobs is about
    # 5 MB, a plain answer a few tens of KB; an answer beyond that is a broken or hostile upstream.
    max_answer_bytes: Annotated[int, Field(ge=1024)] = 16_777_216
    # Largest single Server-Sent Event of a stream (all its lines). 1 MiB, httpx2's own default:
    # an OpenAI chunk is a few hundred bytes (a few KB with logprobs or tool-call arguments).
    max_sse_event_bytes: Annotated[int, Field(ge=1024)] = 1_048_576
    circuit: CircuitConfig = CircuitConfig()
    tls: UpstreamTLS = UpstreamTLS()
    ubiai: UbiAIOptions = UbiAIOptions()

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | list[str]) -> str | list[str]:
        for url in [value] if isinstance(value, str) else value:
            if not url.startswith(("https://", "http://")):
                raise ValueError("must be an http(s) URL")
        if isinstance(value, list) and not value:
            raise ValueError("needs at least one URL")
        return value

    def urls(self) -> list[str]:
        return [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)


class ModelConfig(_Frozen):
    """A model alias callers use. Without a policy the alias routes to ``upstream``."""

    upstream: str
    description: str = ""


class AuthorizationRule(_Frozen):
    """Identities (SPIFFE ID globs) that may call the listed model aliases (globs)."""

    identity: str
    models: list[str]


class RateLimitRule(_Frozen):
    """Requests and/or tokens per minute for identities matching a SPIFFE ID glob."""

    identity: str
    requests_per_minute: Annotated[int, Field(ge=1)] | None = None
    tokens_per_minute: Annotated[int, Field(ge=1)] | None = None


class PolicyRef(_Frozen):
    file: Path
    shadow: Path | None = None  # candidate policy evaluated beside the live one
    reload_interval_s: Annotated[float, Field(gt=0)] = 1.0


class SigningConfig(_Frozen):
    """The key that signs audit checkpoints: an Ed25519 file key (development) or the HSM's."""

    key_file: Path | None = None  # created on first start if missing (0600)
    hsm: bool = False  # use the signing key in the HSM configured under ``hsm:``
    key_id: str = "bastion-audit"


class SecretStoreConfig(_Frozen):
    """The ``secrets:`` section: the store file of ``secret:NAME`` values (gateway.secrets),
    each encrypted under the KEK of the HSM configured under ``hsm:``."""

    file: Path


class GatewayConfig(_Frozen):
    server: ServerConfig = ServerConfig()
    tls: TLSConfig
    limits: LimitsConfig = LimitsConfig()
    upstreams: Mapping[str, UpstreamConfig]
    models: Mapping[str, ModelConfig]
    authorization: list[AuthorizationRule]
    rate_limits: list[RateLimitRule] = Field(default_factory=list)  # first match applies
    policy: PolicyRef | None = None
    audit: AuditConfig | None = None  # the tamper-evident trail; none: decisions only logged
    signing: SigningConfig = SigningConfig()
    tracing: TracingConfig = TracingConfig()  # OpenTelemetry; exporter none|console|otlp
    hsm: HsmSettings | None = None  # PKCS#11 module, token, PIN source, key labels
    secrets: SecretStoreConfig | None = None  # where ``secret:NAME`` references are kept

    @field_validator("models")
    @classmethod
    def _models(cls, value: Mapping[str, ModelConfig]) -> Mapping[str, ModelConfig]:
        if not value:
            raise ValueError("at least one model alias is required")
        return value

    def secret_references(self) -> list[tuple[str, SecretRef]]:
        """Every secret this config names, with the key that names it (``serve --check`` and
        ``doctor`` look each one up; values are never in the file)."""
        refs = [
            (f"upstreams.{name}.api_key", up.api_key)
            for name, up in self.upstreams.items()
            if up.api_key is not None
        ]
        audit = self.audit
        if audit is not None and (audit.digest_key_file or audit.digest_key_env):
            # gateway.audit.load_digest_key prefers the file when both are given.
            digest = (
                SecretRef(file=audit.digest_key_file)
                if audit.digest_key_file
                else SecretRef(env=audit.digest_key_env)
            )
            refs.append(("audit.digest_key", digest))
        if self.hsm is not None:
            refs.append(("hsm.pin", self.hsm.pin_ref()))
        return refs


# -- loading -----------------------------------------------------------------------------
# The file is read by pki.yamlfile, the loader shared with policies and worker configs: every
# error below names file:line:col.


def _resolve_paths(value: Any, base: Path) -> Any:
    if isinstance(value, BaseModel):
        updates = {
            name: _resolve_paths(getattr(value, name), base) for name in type(value).model_fields
        }
        return value.model_copy(update=updates)
    if isinstance(value, Path):
        return value if value.is_absolute() else (base / value).resolve()
    if isinstance(value, Mapping):
        return {k: _resolve_paths(v, base) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_resolve_paths(v, base) for v in value)
    return value


def _coerce_secret_refs(document: YamlDocument, node: Any, loc: tuple[PathPart, ...]) -> Any:
    """``api_key: "secret:NAME"`` is shorthand for ``api_key: {store: NAME}``; a key written
    as the value itself is refused at its position."""
    if isinstance(node, Mapping):
        out = {}
        for key, value in node.items():
            if key == "api_key" and isinstance(value, str) and value.startswith("secret:"):
                out[key] = {"store": value.removeprefix("secret:")}
            elif key == "api_key" and isinstance(value, str):
                line, col = document.locate((*loc, key))
                raise ConfigError(
                    f"{document.file}:{line}:{col}: upstream api_key must be a reference "
                    "({env: VAR}, {file: PATH} or 'secret:NAME'), never the key itself"
                )
            else:
                out[key] = _coerce_secret_refs(document, value, (*loc, key))
        return out
    if isinstance(node, list):
        return [_coerce_secret_refs(document, v, (*loc, i)) for i, v in enumerate(node)]
    return node


def load_config(path: Path) -> GatewayConfig:
    """Load and validate the gateway config; raise :class:`ConfigError` listing every problem."""
    try:
        document = read_yaml_file(path)
    except YamlFileError as exc:
        raise ConfigError(str(exc)) from None
    if not isinstance(document.data, dict):
        raise ConfigError(
            f"{path}:1:1: the config must be a mapping of sections (server, tls, ...)"
        )
    try:
        config = GatewayConfig.model_validate(_coerce_secret_refs(document, document.data, ()))
    except ValidationError as exc:
        raise ConfigError("\n".join(map(str, validation_issues(document, exc)))) from None
    # Every Path field of every section, once: relative paths are relative to the config file.
    resolved: GatewayConfig = _resolve_paths(config, path.resolve().parent)
    config = resolved
    _check_references(path, document, config)
    return config


def _check_references(path: Path, document: YamlDocument, config: GatewayConfig) -> None:
    problems = []
    for alias, model in config.models.items():
        if model.upstream not in config.upstreams:
            line, col = document.locate(("models", alias, "upstream"))
            problems.append(
                f"{path}:{line}:{col}: model '{alias}' names upstream '{model.upstream}', "
                f"which is not defined (known: {', '.join(sorted(config.upstreams)) or 'none'})"
            )
    for name, upstream in config.upstreams.items():
        if upstream.type == "ubiai" and upstream.kind is not RouteKind.MANAGED:
            line, col = document.locate(("upstreams", name, "type"))
            problems.append(
                f"{path}:{line}:{col}: a ubiai upstream is a managed API (kind: managed)"
            )
    if problems:
        raise ConfigError("\n".join(problems))
