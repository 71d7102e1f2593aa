"""Bastion's root exception, and the ``pki`` package's exception tree.

    BastionError                  root of every error Bastion raises on purpose (CLI prints it, exit 1)
     └── PKIError                 internal CA and TLS material
          ├── CANotFoundError     no CA in the directory named
          ├── PassphraseError     CA key passphrase missing or wrong
          ├── IssueError          a certificate request that cannot be honoured (bad SAN, lifetime)
          └── CRLError            CRL missing, unreadable, not signed by the CA, or out of date

Other packages root their own trees at ``BastionError`` (``gateway.errors``, ``pki.hsm``,
``inference.errors``). Messages say what happened, the value involved, and the fix; they never
carry secrets or prompt text.
"""

from __future__ import annotations

__all__ = [
    "BastionError",
    "CANotFoundError",
    "CRLError",
    "IssueError",
    "PKIError",
    "PassphraseError",
]


class BastionError(Exception):
    """Root of Bastion's own errors: a message fit to show an operator."""


class PKIError(BastionError):
    """Internal CA or TLS material problem."""


class CANotFoundError(PKIError):
    pass


class PassphraseError(PKIError):
    pass


class IssueError(PKIError):
    pass


class CRLError(PKIError):
    pass
