"""`Secret`: a value whose repr and str never show it.

Like Starlette's ``Secret``: API keys, PINs, passphrases and tokens travel as ``Secret`` and are
turned into plain text only at the point of use, with :meth:`Secret.reveal`. Logging, tracebacks,
pydantic dumps and f-strings show ``'**********'``.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from pki.errors import BastionError

__all__ = ["Secret", "SecretSourceError", "secret_from_env_or_file"]

_MASK = "**********"


class SecretSourceError(BastionError, ValueError):
    """A secret could not be read from where it was said to be. (A ``ValueError`` too, as it
    was before it joined the ``BastionError`` tree.)"""


class Secret:
    """A secret string. ``str()`` and ``repr()`` are masked; use :meth:`reveal` at the point of use."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret wraps a str")
        self._value = value

    def reveal(self) -> str:
        """Return the plain value. Call this only where the value is handed to its consumer."""
        return self._value

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{_MASK}')"

    def __str__(self) -> str:
        return _MASK

    def __format__(self, spec: str) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would copy the plain value into whatever store receives it.
        raise TypeError("Secret values cannot be pickled")


def secret_from_env_or_file(*, env: str | None = None, file: str | Path | None = None) -> Secret:
    """Read a secret from a file (preferred: mode 0600, trailing newline stripped) or an env var.

    Values are never accepted on the command line, where ``ps`` and shell history show them.
    """
    if file is not None:
        path = Path(file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SecretSourceError(
                f"cannot read secret file {path}: {exc.strerror}. "
                "Check the path and that this user may read it."
            ) from None
        value = text.rstrip("\r\n")
        if not value:
            raise SecretSourceError(f"secret file {path} is empty")
        return Secret(value)
    if env is not None:
        value = os.environ.get(env, "")
        if not value:
            raise SecretSourceError(
                f"environment variable {env} is not set or empty; set it or give a file instead"
            )
        return Secret(value)
    raise SecretSourceError("no secret source given: name a file or an environment variable")
