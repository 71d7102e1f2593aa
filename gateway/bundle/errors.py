"""Errors of the offline bundle (build, lock, sign).

    BastionError
     └── BundleError              anything ``bastion bundle`` refuses or cannot do
          ├── LockError           the requirements lock is missing, malformed, or cannot be made
          ├── FetchError          a wheel or Debian package could not be downloaded or built
          └── BundleLayoutError   the output directory or an input file is not usable

Outside errors (``subprocess``, ``OSError``, ``zipfile``) are translated where they happen;
messages name the file or package, what went wrong and the fix.
"""

from __future__ import annotations

from pki.errors import BastionError

__all__ = ["BundleError", "BundleLayoutError", "FetchError", "LockError"]


class BundleError(BastionError):
    """The offline bundle could not be built."""


class LockError(BundleError):
    """The requirements lock is missing, malformed, or could not be generated."""


class FetchError(BundleError):
    """A wheel or Debian package could not be downloaded or built."""


class BundleLayoutError(BundleError):
    """The output directory or an input file is not usable."""
