"""The ``inference`` package's exception tree.

    BastionError (pki.errors)
     └── InferenceError            anything the worker refuses or cannot do
          ├── WorkerConfigError    config file unreadable, unknown key, invalid lever combination
          ├── ModelLoadError       model source missing or unusable (the artifact loader has its own)
          ├── RequestError         a request the worker will not run as given (HTTP 400, or its
          │    │                   ``status``: 413 body too large, 415 not JSON)
          │    └── ContextLengthError  prompt or prompt + max_tokens over a configured limit
          ├── OverloadedError      admission queue full (HTTP 429 with Retry-After)
          └── WorkerStoppedError   the scheduler has stopped; nothing more is served (HTTP 503)

Outside errors (yaml, pydantic, torch, transformers) are translated where they enter: config
loading, model loading. Messages say what happened, the value or limit involved, and the fix;
they never carry prompt text.
"""

from __future__ import annotations

from pki.errors import BastionError

__all__ = [
    "ContextLengthError",
    "InferenceError",
    "ModelLoadError",
    "OverloadedError",
    "RequestError",
    "WorkerConfigError",
    "WorkerStoppedError",
]


class InferenceError(BastionError):
    """Root of the worker's errors."""


class WorkerConfigError(InferenceError):
    """The worker configuration is unreadable or asks for something this machine cannot do."""


class ModelLoadError(InferenceError):
    """The model could not be loaded from its configured source."""


class RequestError(InferenceError):
    """A request the worker refuses as given (HTTP ``status``, 400 unless said otherwise)."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int = 400,
    ) -> None:
        super().__init__(message)
        self.param = param
        self.code = code
        self.status = status


class ContextLengthError(RequestError):
    """Prompt tokens, or prompt plus ``max_tokens``, exceed a configured limit."""


class OverloadedError(InferenceError):
    """The admission queue is full; the caller should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class WorkerStoppedError(InferenceError):
    """The scheduler is not running (stopped or failed); requests cannot be served."""
