"""The OpenAPI document served at ``/openapi.json`` (OpenAI-compatible subset plus Bastion's
headers and error shape)."""

from __future__ import annotations

from typing import Any

__all__ = ["OPENAPI_DOCUMENT"]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

_HEADERS = {
    "x-bastion-route": {
        "description": "route taken (policy route name, or 'deny')",
        "schema": {"type": "string"},
    },
    "x-bastion-decision-id": {
        "description": "audit record id of the decision",
        "schema": {"type": "string"},
    },
    "x-bastion-policy-version": {
        "description": "sha256 of the canonical policy",
        "schema": {"type": "string"},
    },
}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(code): {
            "description": "OpenAI-shaped error",
            "content": {"application/json": {"schema": _ERROR}},
        }
        for code in codes
    }


_MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"enum": ["system", "developer", "user", "assistant", "tool", "function"]},
        "content": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "object"}},
                {"type": "null"},
            ]
        },
        "name": {"type": "string", "maxLength": 256},
        "tool_calls": {"type": "array", "items": {"type": "object"}},
        "tool_call_id": {"type": "string"},
    },
}

_COMMON = {
    "model": {"type": "string", "minLength": 1, "maxLength": 256},
    "stream": {"type": "boolean"},
    "max_tokens": {"type": "integer", "minimum": 1},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    "seed": {"type": "integer"},
}


def _completion_op(summary: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "responses": {
                "200": {
                    "description": "JSON answer, or an SSE stream ending in 'data: [DONE]' when stream is true",
                    "headers": _HEADERS,
                    "content": {
                        "application/json": {"schema": {"type": "object"}},
                        "text/event-stream": {},
                    },
                },
                **_errors(400, 401, 403, 404, 405, 413, 429, 502, 503, 504),
            },
        }
    }


OPENAPI_DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Bastion gateway",
        "version": "1",
        "description": "OpenAI-compatible API behind mutual TLS. The client certificate's SPIFFE ID is the identity.",
    },
    "paths": {
        "/v1/chat/completions": _completion_op(
            "Chat completion (policy-routed on-prem, managed after sanitization, or denied)",
            {
                "type": "object",
                "required": ["model", "messages"],
                "properties": {
                    **_COMMON,
                    "messages": {"type": "array", "minItems": 1, "items": _MESSAGE},
                },
            },
        ),
        "/v1/completions": _completion_op(
            "Legacy text completion",
            {
                "type": "object",
                "required": ["model", "prompt"],
                "properties": {
                    **_COMMON,
                    "prompt": {
                        "oneOf": [
                            {"type": "string"},
                            {"type": "array", "items": {"type": "string"}},
                        ]
                    },
                },
            },
        ),
        "/v1/models": {
            "get": {
                "summary": "Model aliases this identity may use",
                "responses": {"200": {"description": "list"}},
            }
        },
        "/healthz": {
            "get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}
        },
        "/readyz": {
            "get": {
                "summary": "Readiness",
                "responses": {"200": {"description": "ready"}, "503": {"description": "starting"}},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "text exposition format"}},
            }
        },
    },
    "components": {"schemas": {"Error": _ERROR}},
}
