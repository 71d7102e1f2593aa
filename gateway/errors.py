"""The gateway's exception tree. Each error knows the HTTP answer it becomes.

    BastionError (pki.errors)
     └── GatewayError                 status 500, type "server_error"
          ├── ConfigError             500: the gateway config file is wrong (file:line:col)
          ├── APIError                400: a request the caller must fix or may retry (below)
          │    ├── InvalidRequest     400 invalid_request_error (param names the field)
          │    ├── Unauthenticated    401 the client certificate is not an acceptable identity
          │    ├── PermissionDenied   403 identity may not use this model, or the policy denies
          │    ├── NotFound           404 unknown model or path
          │    ├── MethodNotAllowed   405
          │    ├── PayloadTooLarge    413 body over ``limits.max_body_bytes``
          │    ├── RateLimited        429 with Retry-After
          │    └── ServiceUnavailable 503 with Retry-After (audit down, detector busy, circuit open)
          └── UpstreamError           502/504: the upstream failed (never names the URL or key)
               └── UpstreamTimeout    504

Messages never carry prompt text, secrets or URLs with tokens. Other packages' errors know
nothing of HTTP: ``gateway.api.errors.BOUNDARY`` maps each to the answer it becomes.
"""

from __future__ import annotations

from pki.errors import BastionError

__all__ = [
    "APIError",
    "ConfigError",
    "GatewayError",
    "InvalidRequest",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "ServiceUnavailable",
    "Unauthenticated",
    "UpstreamError",
    "UpstreamTimeout",
]


class GatewayError(BastionError):
    status_code = 500
    error_type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.retry_after = retry_after


class ConfigError(GatewayError):
    status_code = 500
    code = "config_error"


class APIError(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class InvalidRequest(APIError):
    status_code = 400
    error_type = "invalid_request_error"


class Unauthenticated(APIError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_client_certificate"


class PermissionDenied(APIError):
    status_code = 403
    error_type = "permission_error"
    code = "forbidden"


class NotFound(APIError):
    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(APIError):
    status_code = 405
    error_type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(APIError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(APIError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limited"


class ServiceUnavailable(APIError):
    status_code = 503
    error_type = "server_error"
    code = "service_unavailable"


class UpstreamError(GatewayError):
    status_code = 502
    error_type = "upstream_error"
    code = "upstream_failed"


class UpstreamTimeout(UpstreamError):
    status_code = 504
    code = "upstream_timeout"
