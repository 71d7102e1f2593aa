"""The gateway's secret store: managed-API keys and tokens encrypted under the HSM's KEK.

Config references a stored secret as ``"secret:NAME"`` (e.g. ``api_key: "secret:openai"``);
``open_secret_store(config)`` opens the store named by the ``secrets:`` section and
``resolve_secret_ref`` turns a reference into a :class:`~pki.secret.Secret` at startup.

File (``secrets.enc.json``, mode 0600, written atomically)::

    {"format": "bastion-secrets", "version": 1,
     "entries": {"NAME": {"mechanism": "CKM_AES_GCM", "kek_label": ..., "kek_id": ..., "blob": hex}}}

Each value is AES-256-GCM encrypted inside the HSM under the KEK, with associated data
``"bastion-secret/v1\\0" ‖ NAME`` so that a value cannot be moved under another name. Values
never appear in logs, reprs or exceptions; only names do.

Exceptions::

    BastionError (pki.errors)
     └── SecretStoreError          store file unreadable/malformed, value refused
          └── SecretNotFoundError  no secret by that name (add it: `bastion secrets put NAME`)

HSM errors (PIN, token, wrong KEK) are :class:`pki.hsm.HSMError`.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pki.errors import BastionError
from pki.hsm import HsmConfig, HsmSession, UnwrapError, WrappedKey
from pki.secret import Secret

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

__all__ = [
    "MAX_SECRET_BYTES",
    "SECRET_REF_PREFIX",
    "HsmSecretStore",
    "ReferenceCheck",
    "SecretNotFoundError",
    "SecretStore",
    "SecretStoreError",
    "check_secret_references",
    "open_secret_store",
    "resolve_secret_ref",
]

SECRET_REF_PREFIX = "secret:"  # noqa: S105 (a prefix, not a value)
MAX_SECRET_BYTES = 64 * 1024
_FORMAT = "bastion-secrets"
_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class SecretStoreError(BastionError):
    """The secret store cannot give or keep a secret."""


class SecretNotFoundError(SecretStoreError):
    """No secret with that name."""


@runtime_checkable
class SecretStore(Protocol):
    """Gives secrets by name. Implementations never log or show values."""

    def get(self, name: str) -> Secret: ...

    def names(self) -> list[str]: ...


def _aad(name: str) -> bytes:
    return b"bastion-secret/v1\x00" + name.encode("utf-8")


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise SecretStoreError(
            f"secret name {name!r} is invalid: 1-64 characters of letters, digits and ._- "
            "starting with a letter or digit"
        )


class HsmSecretStore:
    """Secrets in a JSON file, each value encrypted under the HSM's KEK."""

    def __init__(self, path: Path, hsm: HsmSession) -> None:
        self._path = path
        self._hsm = hsm

    def __repr__(self) -> str:
        return f"HsmSecretStore(path={str(self._path)!r})"

    @property
    def path(self) -> Path:
        return self._path

    def close(self) -> None:
        """Close the HSM session (the store cannot be used afterwards)."""
        self._hsm.close()

    def _read(self) -> dict[str, Any]:
        try:
            raw = self._path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise SecretStoreError(
                f"cannot read secret store {self._path}: {exc.strerror}"
            ) from None
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise SecretStoreError(f"secret store {self._path} is not valid JSON") from None
        if (
            not isinstance(doc, dict)
            or doc.get("format") != _FORMAT
            or doc.get("version") != _VERSION
            or not isinstance(doc.get("entries"), dict)
        ):
            raise SecretStoreError(f"secret store {self._path} is not a {_FORMAT} v{_VERSION} file")
        entries: dict[str, Any] = doc["entries"]
        return entries

    def names(self) -> list[str]:
        """The stored names, sorted (never values)."""
        return sorted(self._read())

    def get(self, name: str) -> Secret:
        """Decrypt the named secret in the HSM."""
        entries = self._read()
        if name not in entries:
            raise SecretNotFoundError(
                f"no secret named {name!r} in {self._path}; add it with "
                f"`bastion secrets put {name}` (value on stdin)"
            )
        try:
            wrapped = WrappedKey.from_json(entries[name])
            plain = self._hsm.kek_decrypt_plaintext(wrapped, aad=_aad(name))
        except UnwrapError as exc:
            raise SecretStoreError(
                f"secret {name!r} in {self._path} cannot be decrypted: {exc}"
            ) from None
        try:
            return Secret(plain.decode("utf-8"))
        except UnicodeDecodeError:
            raise SecretStoreError(f"secret {name!r} is not UTF-8 text") from None
        finally:
            plain[:] = bytes(len(plain))

    def put(self, name: str, value: Secret) -> None:
        """Encrypt and store ``value`` under ``name`` (replacing an existing one)."""
        _check_name(name)
        data = value.reveal().encode("utf-8")
        if not data:
            raise SecretStoreError(f"secret {name!r} is empty; nothing stored")
        if len(data) > MAX_SECRET_BYTES:
            raise SecretStoreError(
                f"secret {name!r} is {len(data)} bytes; the limit is {MAX_SECRET_BYTES}"
            )
        wrapped = self._hsm.kek_encrypt(data, aad=_aad(name))
        with self._locked():
            entries = self._read()
            entries[name] = wrapped.to_json()
            self._write(entries)

    def delete(self, name: str) -> None:
        """Remove the named secret."""
        with self._locked():
            entries = self._read()
            if entries.pop(name, None) is None:
                raise SecretNotFoundError(f"no secret named {name!r} in {self._path}")
            self._write(entries)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        lock = self._path.with_name(self._path.name + ".lock")
        fd = os.open(lock, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, entries: Mapping[str, Any]) -> None:
        doc = {"format": _FORMAT, "version": _VERSION, "entries": dict(sorted(entries.items()))}
        tmp = self._path.with_name(self._path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._path)


def resolve_secret_ref(value: str, store: SecretStore) -> Secret:
    """``"secret:NAME"`` → the stored secret. Anything else is refused: secret values are never
    written in config."""
    if not value.startswith(SECRET_REF_PREFIX):
        raise SecretStoreError(
            "expected a secret reference 'secret:NAME'; secret values are never written in config"
        )
    name = value.removeprefix(SECRET_REF_PREFIX)
    _check_name(name)
    return store.get(name)


def open_secret_store(config: GatewayConfig) -> HsmSecretStore:
    """Open the store named by ``config.secrets`` on the HSM of ``config.hsm``, or of the
    ``BASTION_HSM_*`` environment when that is absent (both sections were validated, with their
    paths resolved, when the config loaded). This logs in to the token; the HSM session stays
    open for the gateway's lifetime."""
    if config.secrets is None:
        raise SecretStoreError(
            "'secret:NAME' references need the secret store: add 'secrets: {file: PATH}' "
            "(see 'bastion secrets --help')"
        )
    hsm_config = config.hsm.resolve() if config.hsm is not None else HsmConfig.from_env()
    return HsmSecretStore(config.secrets.file, HsmSession(hsm_config))


@dataclass(frozen=True, slots=True)
class ReferenceCheck:
    """Whether one secret reference of the config can be read: where it is named, where it
    points (``env:VAR``, ``file:PATH``, ``secret:NAME``) and, when it cannot, why. Never the
    value."""

    key: str
    source: str
    problem: str | None = None

    @property
    def found(self) -> bool:
        return self.problem is None

    def __str__(self) -> str:
        state = "found" if self.problem is None else f"NOT FOUND: {self.problem}"
        return f"{self.key} {self.source}: {state}"


def check_secret_references(config: GatewayConfig) -> list[ReferenceCheck]:
    """Look up every secret the config names, as ``bastion serve`` will: files and variables
    are read, ``secret:NAME`` is decrypted in the HSM (proving the store, the token, the PIN
    and the KEK). Each value is dropped at once; only found / not found is kept."""
    from pki.secret import SecretSourceError

    refs = config.secret_references()
    checks: list[ReferenceCheck] = []
    stored = [(key, ref) for key, ref in refs if ref.store]
    for key, ref in refs:
        if ref.store:
            continue
        try:
            ref.resolve()
        except SecretSourceError as exc:
            checks.append(ReferenceCheck(key, ref.describe(), str(exc)))
        else:
            checks.append(ReferenceCheck(key, ref.describe()))
    if not stored:
        return checks
    try:
        store = open_secret_store(config)
    except BastionError as exc:  # no secrets section, HSM unreachable, PIN refused
        reason = f"the secret store cannot be opened: {exc}".replace("\n", "; ")
        return checks + [ReferenceCheck(key, ref.describe(), reason) for key, ref in stored]
    try:
        for key, ref in stored:
            try:
                ref.resolve(store)
            except BastionError as exc:
                checks.append(ReferenceCheck(key, ref.describe(), str(exc)))
            else:
                checks.append(ReferenceCheck(key, ref.describe()))
    finally:
        store.close()
    return checks
