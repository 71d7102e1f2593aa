"""Where the HSM is and how to log in: typed, validated once, frozen.

``HsmSettings`` is the shape found in YAML configuration files (paths and names only, never a
PIN value); ``HsmConfig`` is the resolved form holding the PIN as a :class:`~pki.secret.Secret`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from pki.hsm._errors import HSMConfigError
from pki.secret import Secret, SecretSourceError, secret_from_env_or_file
from pki.secretref import SecretRef

__all__ = [
    "DEFAULT_KEK_LABEL",
    "DEFAULT_SIGNING_KEY_LABEL",
    "DEFAULT_SOFTHSM_MODULE",
    "ENV_MODULE",
    "ENV_PIN",
    "ENV_PIN_FILE",
    "ENV_TOKEN",
    "HsmConfig",
    "HsmSettings",
]

DEFAULT_SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
DEFAULT_KEK_LABEL = "bastion-kek"
DEFAULT_SIGNING_KEY_LABEL = "bastion-signing"

ENV_MODULE = "BASTION_HSM_MODULE"
ENV_TOKEN = "BASTION_HSM_TOKEN"  # noqa: S105 (a variable name, not a value)
ENV_PIN_FILE = "BASTION_HSM_PIN_FILE"
ENV_PIN = "BASTION_HSM_PIN"

_MAX_LABEL = 32  # CKA_LABEL of a token is 32 bytes, space padded (PKCS#11 CK_TOKEN_INFO)


def _check_label(kind: str, value: str) -> None:
    if not value or len(value.encode()) > _MAX_LABEL:
        raise HSMConfigError(
            f"{kind} {value!r} is invalid: it must be 1 to {_MAX_LABEL} bytes of UTF-8"
        )


@dataclass(frozen=True, slots=True)
class HsmConfig:
    """A resolved HSM configuration: the PKCS#11 module, the token, the user PIN and key labels."""

    module: Path
    token_label: str
    pin: Secret = field(repr=False)
    kek_label: str = DEFAULT_KEK_LABEL
    signing_key_label: str = DEFAULT_SIGNING_KEY_LABEL

    def __post_init__(self) -> None:
        if not isinstance(self.pin, Secret):
            raise HSMConfigError("HsmConfig.pin must be a pki.secret.Secret, not a plain string")
        if not self.pin:
            raise HSMConfigError("the HSM user PIN is empty; give a PIN file or variable")
        _check_label("token label", self.token_label)
        _check_label("KEK label", self.kek_label)
        _check_label("signing key label", self.signing_key_label)
        if self.kek_label == self.signing_key_label:
            raise HSMConfigError(
                f"KEK and signing key share the label {self.kek_label!r}; give them distinct labels"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> HsmConfig:
        """Build from ``BASTION_HSM_MODULE`` (default: SoftHSM2), ``BASTION_HSM_TOKEN`` and
        ``BASTION_HSM_PIN_FILE`` (preferred) or ``BASTION_HSM_PIN``, as printed by
        ``bastion hsm init``."""
        env = os.environ if environ is None else environ
        token = env.get(ENV_TOKEN, "")
        if not token:
            raise HSMConfigError(
                f"{ENV_TOKEN} is not set: name the token label (see `bastion hsm init`)"
            )
        pin_file = env.get(ENV_PIN_FILE) or None
        if pin_file is None and not env.get(ENV_PIN):
            raise HSMConfigError(
                f"no HSM PIN: set {ENV_PIN_FILE} to a 0600 file holding the PIN, or {ENV_PIN}"
            )
        pin = _read_pin(file=Path(pin_file)) if pin_file is not None else Secret(env[ENV_PIN])
        return cls(
            module=Path(env.get(ENV_MODULE) or DEFAULT_SOFTHSM_MODULE),
            token_label=token,
            pin=pin,
        )


def _read_pin(*, file: Path | None = None, env: str | None = None) -> Secret:
    try:
        return secret_from_env_or_file(file=file, env=env)
    except SecretSourceError as exc:
        raise HSMConfigError(f"cannot read the HSM PIN: {exc}") from None


class HsmSettings(BaseModel):
    """The ``hsm:`` section of a YAML configuration. Exactly one of ``pin_file``/``pin_env``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    module: Path = DEFAULT_SOFTHSM_MODULE
    token: str
    pin_file: Path | None = None
    pin_env: str | None = None
    kek_label: str = DEFAULT_KEK_LABEL
    signing_key_label: str = DEFAULT_SIGNING_KEY_LABEL

    @model_validator(mode="after")
    def _one_pin_source(self) -> HsmSettings:
        if (self.pin_file is None) == (self.pin_env is None):
            raise ValueError("give exactly one of pin_file or pin_env for the HSM user PIN")
        return self

    def pin_ref(self) -> SecretRef:
        """Where the user PIN comes from, as the reference type every config shares."""
        return SecretRef(file=self.pin_file) if self.pin_file else SecretRef(env=self.pin_env)

    def resolve(self) -> HsmConfig:
        """Read the PIN from its source and return the resolved configuration."""
        return HsmConfig(
            module=self.module,
            token_label=self.token,
            pin=_read_pin(file=self.pin_file, env=self.pin_env),
            kek_label=self.kek_label,
            signing_key_label=self.signing_key_label,
        )
