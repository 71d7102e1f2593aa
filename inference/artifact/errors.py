"""The encrypted model artifact's exception tree.

    BastionError (pki.errors)
     └── InferenceError (inference.errors)
          └── ArtifactError                anything wrong with an artifact or a model directory
               ├── ModelDirError           a model directory is missing files or unreadable
               ├── ArtifactFormatError     not an artifact, unknown version, malformed header
               ├── ArtifactTamperedError   a chunk or the header fails authentication, chunks are
               │                           missing, reordered or truncated
               ├── ArtifactKeyError        the data key cannot be unwrapped: wrong token, wrong or
               │                           missing KEK (wraps the HSMError's message)
               └── ModelIdMismatchError    the artifact holds another model than the one expected

HSM failures met while loading (PIN, token, module) stay ``pki.hsm.HSMError``: they are about
the HSM, not the artifact, and the operator fixes them there.
"""

from __future__ import annotations

from inference.errors import InferenceError

__all__ = [
    "ArtifactError",
    "ArtifactFormatError",
    "ArtifactKeyError",
    "ArtifactTamperedError",
    "ModelDirError",
    "ModelIdMismatchError",
]


class ArtifactError(InferenceError):
    """Root of the artifact errors."""


class ModelDirError(ArtifactError):
    pass


class ArtifactFormatError(ArtifactError):
    pass


class ArtifactTamperedError(ArtifactError):
    pass


class ArtifactKeyError(ArtifactError):
    pass


class ModelIdMismatchError(ArtifactError):
    pass
