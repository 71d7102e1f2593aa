"""OpenAI-shaped error responses, ``{"error": {"message", "type", "param", "code"}}``, and the
one table that maps domain errors to HTTP answers.

The API's own vocabulary (:mod:`gateway.errors`: ``InvalidRequest`` 400 … ``UpstreamTimeout``
504) carries its status. Every other package roots its errors at ``BastionError`` and knows
nothing of HTTP; :data:`BOUNDARY` says what each becomes when one reaches the HTTP boundary (the
request path normally fails closed before that: detection and policy errors send nothing to a
managed route). The nearest class in the error's MRO wins, and the caller gets the table's
message, never the domain message (which may name files, keys or the store). A test walks every
error class of ``gateway`` and ``pki`` and proves each has an explicit row or status.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from starlette.responses import JSONResponse

from gateway.audit import AuditError, AuditUnavailable
from gateway.bundle.errors import BundleError
from gateway.detect.errors import DetectError
from gateway.errors import GatewayError, ServiceUnavailable
from gateway.policy.errors import PolicyError
from gateway.sanitize.errors import SanitizeError
from gateway.secrets import SecretStoreError
from pki.errors import BastionError, PKIError
from pki.hsm import HSMError
from pki.secret import SecretSourceError
from pki.yamlfile import YamlFileError

__all__ = ["BOUNDARY", "Boundary", "as_api_error", "error_response"]


@dataclass(frozen=True, slots=True)
class Boundary:
    """What a domain error becomes: an API error class, its ``code``, the caller's message."""

    api_error: type[GatewayError]
    code: str
    message: str


_NOTHING_SENT = "nothing was forwarded"
BOUNDARY: Mapping[type[BastionError], Boundary] = MappingProxyType(
    {
        AuditUnavailable: Boundary(
            ServiceUnavailable,
            "audit_unavailable",
            f"the audit trail cannot record this request now; {_NOTHING_SENT}; retry later",
        ),
        AuditError: Boundary(
            GatewayError, "audit_error", f"the audit trail refused this request; {_NOTHING_SENT}"
        ),
        PolicyError: Boundary(
            ServiceUnavailable,
            "policy_unavailable",
            f"the routing policy could not decide this request; {_NOTHING_SENT}",
        ),
        DetectError: Boundary(
            ServiceUnavailable,
            "detection_failed",
            f"sensitive-data detection failed for this request; {_NOTHING_SENT}",
        ),
        SanitizeError: Boundary(
            GatewayError,
            "sanitize_failed",
            f"the request could not be sanitized as the policy asks; {_NOTHING_SENT}",
        ),
        SecretStoreError: Boundary(
            GatewayError,
            "secret_unavailable",
            f"a configured secret is unavailable; {_NOTHING_SENT}",
        ),
        SecretSourceError: Boundary(
            GatewayError,
            "secret_unavailable",
            f"a configured secret is unavailable; {_NOTHING_SENT}",
        ),
        HSMError: Boundary(
            ServiceUnavailable, "hsm_unavailable", f"the HSM refused an operation; {_NOTHING_SENT}"
        ),
        PKIError: Boundary(
            GatewayError,
            "tls_material_error",
            f"the gateway's TLS material failed; {_NOTHING_SENT}",
        ),
        # A YAML file (config, policy) read while serving: policy reloads keep the last good
        # policy, so this only reaches a caller if a request itself needed the file.
        YamlFileError: Boundary(
            ServiceUnavailable,
            "config_unavailable",
            f"a configuration file could not be read; {_NOTHING_SENT}",
        ),
        BundleError: Boundary(
            GatewayError, "internal_error", f"an internal error occurred; {_NOTHING_SENT}"
        ),
    }
)
_UNMAPPED = Boundary(GatewayError, "internal_error", f"an internal error occurred; {_NOTHING_SENT}")


def as_api_error(exc: BastionError) -> GatewayError:
    """The API error ``exc`` is answered with: itself for the API's own errors, else the nearest
    row of :data:`BOUNDARY` (an unmapped class is a 500 with a generic message)."""
    for cls in type(exc).__mro__:
        row = BOUNDARY.get(cls)
        if row is not None:
            return row.api_error(row.message, code=row.code)
        if cls is GatewayError or cls is BastionError:
            break
    if isinstance(exc, GatewayError):
        return exc
    return _UNMAPPED.api_error(_UNMAPPED.message, code=_UNMAPPED.code)


def error_response(exc: BastionError, headers: dict[str, str] | None = None) -> JSONResponse:
    api = as_api_error(exc)
    body = {
        "error": {
            "message": api.message,
            "type": api.error_type,
            "param": api.param,
            "code": api.code,
        }
    }
    out = dict(headers or {})
    if api.retry_after is not None:
        out["retry-after"] = str(max(1, math.ceil(api.retry_after)))
    return JSONResponse(body, status_code=api.status_code, headers=out)
