"""OpenAI-shaped error responses: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import math

from starlette.responses import JSONResponse

from gateway.errors import GatewayError

__all__ = ["error_response"]


def error_response(exc: GatewayError, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {
        "error": {
            "message": exc.message,
            "type": exc.error_type,
            "param": exc.param,
            "code": exc.code,
        }
    }
    out = dict(headers or {})
    if exc.retry_after is not None:
        out["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
    return JSONResponse(body, status_code=exc.status_code, headers=out)
