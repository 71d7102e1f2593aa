"""Sanitization's exception tree, rooted in the gateway's.

    BastionError (pki.errors)
     └── GatewayError (gateway.errors)     status 500: the request never reaches a managed route
          └── SanitizeError                sanitization could not be done as the policy asks
               └── HashKeyMissing          the policy asks for ``hash`` but no HMAC key is set

Messages name the entity type and operation, never the value.
"""

from __future__ import annotations

from gateway.errors import GatewayError

__all__ = ["HashKeyMissing", "SanitizeError"]


class SanitizeError(GatewayError):
    """The request could not be sanitized; it must not go to a managed upstream."""


class HashKeyMissing(SanitizeError):
    """A ``hash`` operation was asked for without an HMAC key."""
