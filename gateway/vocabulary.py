"""The words every part of the gateway shares, each defined once.

- :class:`RouteKind`: where a request may go, ``onprem`` (Bastion's own worker, inside the
  perimeter) or ``managed`` (a managed API, after sanitization). An upstream's ``kind`` in the
  config, a policy route's ``kind`` and the adapters' ``kind`` are this type; the policy's
  decision (:class:`gateway.policy.Action`) is one of these two or ``deny``.
- :class:`Endpoint`: the OpenAI endpoints the gateway serves; :attr:`Endpoint.path` is the path
  callers use (``/v1/chat/completions``), the value the path under an upstream's ``/v1`` base.

Nothing here imports anything of the gateway, so the config, the policy engine and the upstream
adapters can all use it.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["API_PREFIX", "Endpoint", "RouteKind"]

API_PREFIX = "/v1"


class RouteKind(StrEnum):
    ONPREM = "onprem"
    MANAGED = "managed"


class Endpoint(StrEnum):
    CHAT = "chat/completions"
    COMPLETIONS = "completions"

    @property
    def path(self) -> str:
        """The path a caller posts to: ``/v1/chat/completions``, ``/v1/completions``."""
        return f"{API_PREFIX}/{self.value}"

    @classmethod
    def from_path(cls, path: str) -> Endpoint | None:
        """The endpoint served at ``path``, or None."""
        for endpoint in cls:
            if endpoint.path == path:
                return endpoint
        return None
