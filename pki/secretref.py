"""``SecretRef``: where a secret comes from, the one reference type of every Bastion config.

A config file never holds a secret value, only where to find it: exactly one of ``env`` (a
variable), ``file`` (a 0600 file; trailing newline stripped) or ``store`` (``secret:NAME`` in the
gateway's HSM-backed store, ``gateway.secrets``). Upstream API keys, the audit digest key, the
HSM PIN and the CA passphrase are all described by it; :meth:`SecretRef.resolve` turns it into
a :class:`~pki.secret.Secret` at the point of use, and :meth:`SecretRef.describe` names it in
messages (``env:VAR``, ``file:PATH``, ``secret:NAME``), never the value.

Kept apart from :mod:`pki.secret` so that importing ``Secret`` does not load pydantic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, model_validator

from pki.secret import Secret, SecretSourceError, secret_from_env_or_file

__all__ = ["SecretLookup", "SecretRef"]


class SecretLookup(Protocol):
    """A store that gives secrets by name (``gateway.secrets.HsmSecretStore``)."""

    def get(self, name: str) -> Secret: ...


class SecretRef(BaseModel):
    """Where a secret comes from. Exactly one of ``env``, ``file``, ``store`` (``secret:NAME``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str | None = None
    file: Path | None = None
    store: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        given = [name for name in ("env", "file", "store") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError(
                "a secret reference needs exactly one of env, file, store "
                f"(given: {', '.join(given) or 'none'})"
            )
        return self

    def describe(self) -> str:
        if self.env:
            return f"env:{self.env}"
        if self.file:
            return f"file:{self.file}"
        return f"secret:{self.store}"

    def resolve(self, store: SecretLookup | None = None) -> Secret:
        """The value, read now. ``secret:NAME`` needs ``store``; a source that cannot be read
        raises :class:`~pki.secret.SecretSourceError` naming the reference, never a value."""
        if self.store:
            if store is None:
                raise SecretSourceError(
                    f"{self.describe()} needs the secret store; configure 'secrets:' "
                    "(see 'bastion secrets --help')"
                )
            return store.get(self.store)
        return secret_from_env_or_file(env=self.env, file=self.file)
