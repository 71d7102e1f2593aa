"""The OpenAPI document served at ``/openapi.json`` (OpenAI-compatible subset plus Bastion's
headers and error shape). The request bodies are generated from the typed models, so the
document cannot drift from what the gateway accepts."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from gateway.api.schemas import ChatCompletionRequest, CompletionRequest, field_roles

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


def _request_schemas() -> dict[str, Any]:
    """The request models' JSON Schemas, generated from :mod:`gateway.api.schemas` (the one
    source of truth), each property annotated with its gate role (``x-bastion-role``)."""
    _, document = models_json_schema(
        [(ChatCompletionRequest, "validation"), (CompletionRequest, "validation")],
        by_alias=True,
        ref_template="#/components/schemas/{model}",
    )
    defs: dict[str, Any] = document["$defs"]
    for model_name, wire, role in field_roles():
        prop = defs.get(model_name, {}).get("properties", {}).get(wire)
        if prop is not None:
            prop["x-bastion-role"] = role.value
    return defs


_SCHEMAS = _request_schemas()


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
            {"$ref": "#/components/schemas/ChatCompletionRequest"},
        ),
        "/v1/completions": _completion_op(
            "Legacy text completion",
            {"$ref": "#/components/schemas/CompletionRequest"},
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
    "components": {"schemas": {**_SCHEMAS, "Error": _ERROR}},
}
