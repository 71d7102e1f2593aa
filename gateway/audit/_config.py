"""``AuditConfig``: the ``audit:`` section of the gateway config, validated once and frozen."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.audit._errors import AuditConfigError
from pki.secret import Secret, SecretSourceError, secret_from_env_or_file
from pki.yamlfile import format_path

__all__ = [
    "AuditConfig",
    "audit_config_from_file",
    "audit_digest_key",
    "load_digest_key",
    "read_config_document",
]


class AuditConfig(BaseModel):
    """Where the trail lives and how it commits and signs.

    ``max_batch`` and ``max_wait_ms`` bound group commit: the single writer takes every record
    waiting (at most ``max_batch``) into one transaction and one fsync; with ``max_wait_ms`` > 0
    it also waits that long for more before committing (more throughput, more latency).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    backend: Literal["sqlite", "postgres"] = "sqlite"
    path: Path | None = None  # sqlite file
    dsn: Secret | None = None  # postgres conninfo; may hold a password, hence a Secret
    origin: str = Field(default="bastion.local/audit", min_length=1, max_length=200)
    checkpoint_interval_s: float = Field(default=60.0, gt=0)
    max_batch: int = Field(default=512, ge=1, le=10_000)
    max_wait_ms: float = Field(default=0.0, ge=0, le=1_000)
    # A batch holding only outcome records waits this long for a decision to share its fsync.
    outcome_linger_ms: float = Field(default=20.0, ge=0, le=1_000)
    lock_timeout_s: float = Field(default=5.0, gt=0, le=300)
    max_record_bytes: int = Field(default=65_536, ge=1_024, le=16 * 1024 * 1024)
    # Key rotation: PEM public keys of earlier checkpoint signers. `bastion audit verify --config`
    # accepts checkpoints signed by them as well as by the configured signer.
    retired_public_keys: tuple[Path, ...] = ()
    digest_key_file: Path | None = None
    digest_key_env: str | None = None
    # E-discovery: request bodies (and non-streamed answers) envelope-encrypted under a data
    # key wrapped by the HSM's KEK (gateway.audit.capture). Needs an ``hsm:`` section.
    capture_payloads: bool = False
    max_payload_bytes: int = Field(default=4 * 1024 * 1024, ge=65_536, le=64 * 1024 * 1024)

    @field_validator("dsn", mode="before")
    @classmethod
    def _wrap_dsn(cls, value: object) -> object:
        return Secret(value) if isinstance(value, str) else value

    @field_validator("origin")
    @classmethod
    def _check_origin(cls, value: str) -> str:
        # C2SP signed-note key names: no spaces, no '+', printable.
        if any(c.isspace() or c == "+" or ord(c) < 0x20 for c in value):
            raise ValueError(
                f"origin {value!r} may not contain spaces, '+' or control characters "
                "(it is the signed-note key name); use e.g. 'bastion.example/audit'"
            )
        return value

    @model_validator(mode="after")
    def _check_backend(self) -> AuditConfig:
        if self.backend == "sqlite" and self.path is None:
            raise ValueError("audit.backend is 'sqlite' but audit.path is not set: name the file")
        if self.backend == "postgres" and not self.dsn:
            raise ValueError("audit.backend is 'postgres' but audit.dsn is not set: give a DSN")
        return self


def load_digest_key(config: AuditConfig) -> Secret:
    """The HMAC key for :func:`gateway.audit.text_digest`, from ``digest_key_file`` (preferred)
    or ``digest_key_env``."""
    if config.digest_key_file is None and config.digest_key_env is None:
        raise AuditConfigError(
            "no audit digest key: set audit.digest_key_file (or audit.digest_key_env) to a "
            "random secret of at least 32 characters"
        )
    try:
        key = secret_from_env_or_file(env=config.digest_key_env, file=config.digest_key_file)
    except SecretSourceError as exc:
        raise AuditConfigError(f"audit digest key: {exc}") from None
    if len(key.reveal()) < 32:
        raise AuditConfigError(
            "the audit digest key is shorter than 32 characters: a short key makes text "
            "digests guessable; generate one with `openssl rand -hex 32`"
        )
    return key


def audit_digest_key(config: AuditConfig) -> Secret:
    """The sub-key the gateway keys audit digests with (text and header digests): HMAC-SHA256
    of ``"audit-text-digest"`` under the operator's digest key, as ``gateway.routing.derive_key``
    derives it (a test pins the two together)."""
    key = load_digest_key(config)
    return Secret(hmac.new(key.reveal().encode(), b"audit-text-digest", hashlib.sha256).hexdigest())


def read_config_document(path: Path) -> dict[str, Any]:
    """A gateway config file as plain data (only the sections a CLI command needs are then
    validated, so a command works from a partial config)."""
    from pki.yamlfile import YamlFileError, read_yaml_file  # the loader every config shares

    try:
        document = read_yaml_file(path)
    except YamlFileError as exc:  # file:line:col and what is wrong
        raise AuditConfigError(str(exc)) from None
    return document.data if isinstance(document.data, dict) else {}


def relative_to_file(path: Path, value: object) -> object:
    """A path value from config file ``path``, made absolute relative to the file."""
    if isinstance(value, str) and not Path(value).is_absolute():
        return str(path.parent / value)
    return value


def audit_config_from_file(path: Path) -> AuditConfig:
    """The ``audit:`` section of gateway config file ``path`` (paths relative to the file)."""
    from pydantic import ValidationError

    section = read_config_document(path).get("audit")
    if not isinstance(section, dict):
        raise AuditConfigError(f"{path} has no 'audit:' section; add one or use --sqlite/--dsn")
    for key in ("path", "digest_key_file"):
        if key in section:
            section[key] = relative_to_file(path, section[key])
    retired = section.get("retired_public_keys")
    if isinstance(retired, list):
        section["retired_public_keys"] = [relative_to_file(path, p) for p in retired]
    try:
        return AuditConfig(**section)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = format_path(first["loc"]) or "audit"
        raise AuditConfigError(f"{path}: audit.{field}: {first['msg']}") from None
