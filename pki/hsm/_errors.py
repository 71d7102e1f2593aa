"""The HSM exception tree and the one place PKCS#11 exceptions are translated into it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pkcs11.exceptions as p11

from pki.errors import BastionError

__all__ = [
    "HSMConfigError",
    "HSMError",
    "HSMOperationError",
    "KeyMissingError",
    "KeyPolicyError",
    "MechanismNotSupportedError",
    "ModuleLoadError",
    "PinError",
    "TokenNotFoundError",
    "UnwrapError",
    "translate_pkcs11",
]


class HSMError(BastionError):
    """Root of the HSM errors."""


class HSMConfigError(HSMError):
    """The HSM configuration is incomplete or points at something unreadable."""


class ModuleLoadError(HSMError):
    """The PKCS#11 library could not be loaded or initialised."""


class TokenNotFoundError(HSMError):
    """No token with the configured label is present in the module."""


class PinError(HSMError):
    """The user PIN is wrong, locked, expired or not initialised."""


class KeyMissingError(HSMError):
    """A key Bastion needs is not on the token."""


class KeyPolicyError(HSMError):
    """A key exists but with attributes Bastion refuses (e.g. an extractable KEK)."""


class MechanismNotSupportedError(HSMError):
    """The module does not implement a mechanism Bastion needs."""


class HSMOperationError(HSMError):
    """Any other PKCS#11 failure."""


class UnwrapError(HSMOperationError):
    """A blob did not decrypt under the KEK: wrong key, wrong token, or the blob was altered."""


_PIN = (
    p11.PinIncorrect,
    p11.PinInvalid,
    p11.PinLenRange,
    p11.PinExpired,
    p11.PinLocked,
    p11.UserPinNotInitialized,
)
_MECHANISM = (p11.MechanismInvalid, p11.MechanismParamInvalid, p11.FunctionNotSupported)
_DECRYPT = (
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
    p11.WrappedKeyInvalid,
    p11.WrappedKeyLenRange,
)


@contextmanager
def translate_pkcs11(action: str, *, token: str = "", key: str = "") -> Iterator[None]:
    """Run a PKCS#11 call and turn its exceptions into :class:`HSMError` subclasses.

    ``action`` says what was being done ("unwrap the data key"); ``token`` and ``key`` name the
    token and key label involved so the message tells the operator what to check. The PKCS#11
    return code is named by its exception class; values (PINs, key bytes) are never included.
    """
    where = "".join((f" on token {token!r}" if token else "", f" with key {key!r}" if key else ""))
    try:
        yield
    except p11.PKCS11Error as exc:
        code = type(exc).__name__
        if isinstance(exc, _PIN):
            raise PinError(
                f"cannot {action}{where}: the user PIN was refused ({code}). "
                "Check the PIN file or environment variable, and that the token's PIN is not "
                "locked (an SO can reset it)."
            ) from None
        if isinstance(exc, (p11.NoSuchToken, p11.TokenNotPresent, p11.TokenNotRecognised)):
            raise TokenNotFoundError(
                f"cannot {action}: no token labelled {token!r} is present ({code}). Check the "
                "token label, the module "
                "path and, for SoftHSM2, that SOFTHSM2_CONF points at the right configuration."
            ) from None
        if isinstance(exc, p11.NoSuchKey):
            raise KeyMissingError(
                f"cannot {action}: key not found{where} ({code}). "
                "Create it with `bastion hsm init`, or check the key label in the configuration."
            ) from None
        if isinstance(exc, p11.MultipleObjectsReturned):
            raise KeyPolicyError(
                f"cannot {action}: more than one object matches{where} ({code}). "
                "Key labels must be unique on the token; remove or relabel the duplicate."
            ) from None
        if isinstance(exc, _MECHANISM):
            raise MechanismNotSupportedError(
                f"cannot {action}{where}: the PKCS#11 module does not support the mechanism "
                f"({code}). Bastion needs AES-256-GCM and ECDSA on P-256; check the module's "
                "mechanism list (`bastion hsm status`) or its firmware/policy settings."
            ) from None
        if isinstance(exc, (p11.AttributeSensitive, p11.KeyUnextractable)):
            raise KeyPolicyError(
                f"cannot {action}{where}: the key is sensitive/non-extractable ({code}); "
                "its value never leaves the HSM."
            ) from None
        if isinstance(exc, (p11.UserAlreadyLoggedIn, p11.UserTooManyTypes)):
            raise HSMOperationError(
                f"cannot {action}{where}: this process is already logged in to the token by "
                f"another session ({code}). Share one HsmSession per token in the process."
            ) from None
        if isinstance(exc, (p11.UserNotLoggedIn, p11.SessionClosed, p11.SessionHandleInvalid)):
            raise HSMOperationError(
                f"cannot {action}{where}: the session is closed or not logged in ({code}). "
                "Open a new HsmSession."
            ) from None
        if isinstance(exc, _DECRYPT) or (
            isinstance(exc, (p11.GeneralError, p11.FunctionFailed)) and "decrypt" in action
        ):
            # SoftHSM 2.6 reports a GCM tag mismatch as CKR_GENERAL_ERROR.
            raise UnwrapError(
                f"cannot {action}{where}: the data did not authenticate under this key ({code}). "
                "It was encrypted under another token's key, or it was altered."
            ) from None
        if isinstance(exc, (p11.DeviceRemoved, p11.DeviceError, p11.DeviceMemory)):
            raise HSMOperationError(
                f"cannot {action}{where}: the HSM device failed ({code}). "
                "Check the device connection and its logs."
            ) from None
        raise HSMOperationError(f"cannot {action}{where}: PKCS#11 error {code}.") from None
