"""UbiAI-style managed upstreams: the token travels in the URL.

Wire shape: ``POST <endpoint URL><token>`` with a JSON body ``input_text``, ``system_prompt``,
``user_prompt``, ``temperature``, ``monitor_model``, ``knowledge_base_ids``, ``session_id``; the
answer's text is read from ``response_field`` (default ``output``). Chat messages map in as:
system/developer messages → ``system_prompt``; the last user message → ``user_prompt``; earlier
turns → ``input_text`` as a role-tagged transcript (:meth:`UbiAIUpstream.encode` makes the
bytes; the pipeline scans exactly those and passes them back as ``wire``). The answer maps back
into an OpenAI ``chat.completion`` (and, for ``stream: true``, a synthesized SSE stream).

Because the URL holds the token, it is built only at the moment of the call, never stored in an
attribute that could reach a repr, and no error message includes it (``map_transport_errors``
reports exception types only; the ``httpx2`` logger is kept at WARNING by the server). Only the
wire format lives here; targets, retries, the breaker and the bounds are ``_pool.UpstreamPool``'s
(the endpoint URL plays the part of ``base_url``; several URLs form a pool, as for OpenAI).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx2

from gateway.config import UbiAIOptions, UpstreamConfig
from gateway.errors import InvalidRequest, UpstreamError
from gateway.upstreams._pool import UpstreamPool
from gateway.upstreams.base import Endpoint, UpstreamReply
from gateway.vocabulary import RouteKind
from pki.secret import Secret

__all__ = ["UbiAIUpstream", "chat_to_ubiai"]

_JSON_HEADERS = {"content-type": "application/json"}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def chat_to_ubiai(body: Mapping[str, Any], options: UbiAIOptions) -> dict[str, Any]:
    messages = body.get("messages") or [{"role": "user", "content": body.get("prompt", "")}]
    system = [_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer")]
    turns = [m for m in messages if m.get("role") not in ("system", "developer")]
    last_user = max((i for i, m in enumerate(turns) if m.get("role") == "user"), default=None)
    user_prompt = _text(turns[last_user].get("content")) if last_user is not None else ""
    history = [
        f"{m.get('role')}: {_text(m.get('content'))}" for i, m in enumerate(turns) if i != last_user
    ]
    return {
        "input_text": "\n".join(history),
        "system_prompt": "\n".join(system),
        "user_prompt": user_prompt,
        "temperature": body.get("temperature", 0.7),
        "monitor_model": options.monitor_model,
        "knowledge_base_ids": list(options.knowledge_base_ids),
        "session_id": options.session_id or str(uuid.uuid4()),
    }


class _SyntheticStream:
    """SSE events for a stream request, made from one complete UbiAI answer."""

    def __init__(self, reply: dict[str, Any]) -> None:
        self._reply = reply

    async def events(self) -> AsyncIterator[str]:
        base = {k: self._reply[k] for k in ("id", "created", "model")}
        text = self._reply["choices"][0]["message"]["content"]
        first = {
            **base,
            "object": "chat.completion.chunk",
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}
            ],
        }
        yield json.dumps(first)
        last = {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
        yield json.dumps(last)

    async def aclose(self) -> None:
        return None


class UbiAIUpstream:
    def __init__(self, name: str, config: UpstreamConfig, token: Secret | None) -> None:
        if token is None:
            raise UpstreamError(f"ubiai upstream '{name}' needs api_key (the URL token)")
        self.name = name
        self.kind: RouteKind = config.kind
        self._config = config
        self._token = token
        self._response_field = config.ubiai.response_field
        self._pool = UpstreamPool(name, config)

    def upstream_model(self, alias: str) -> str:
        return self._config.model_map.get(alias, alias)

    def circuit_state(self) -> str:
        return self._pool.circuit_state()

    def _text(self, data: Any) -> str:
        text = data.get(self._response_field) if isinstance(data, dict) else None
        if not isinstance(text, str):
            raise UpstreamError(
                f"upstream '{self.name}' answer has no string field '{self._response_field}'"
            )
        return text

    def encode(self, endpoint: Endpoint, body: Mapping[str, Any]) -> bytes:
        """The exact request body bytes for the OpenAI-shaped ``body``: the UbiAI fields of
        :func:`chat_to_ubiai` as compact JSON (UTF-8). A fresh ``session_id`` each call unless
        one is configured, so the caller encodes once and sends those bytes (``wire``)."""
        payload = chat_to_ubiai(body, self._config.ubiai)
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()

    async def complete(
        self, endpoint: Endpoint, body: dict[str, Any], wire: bytes | None = None
    ) -> UpstreamReply:
        data = self.encode(endpoint, body) if wire is None else wire

        def build(client: httpx2.AsyncClient, url: str) -> httpx2.Request:
            # The token joins the URL only here, at the moment of the call.
            return client.build_request(
                "POST", url + self._token.reveal(), content=data, headers=_JSON_HEADERS
            )

        text = await self._pool.request_json(build, self._text)
        created = int(time.time())
        if endpoint is Endpoint.COMPLETIONS:
            out = {
                "id": f"cmpl-{uuid.uuid4().hex}",
                "object": "text_completion",
                "created": created,
                "model": body.get("model", ""),
                "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
            }
        else:
            out = {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": created,
                "model": body.get("model", ""),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
            }
        return UpstreamReply(200, out)

    async def stream(
        self, endpoint: Endpoint, body: dict[str, Any], wire: bytes | None = None
    ) -> _SyntheticStream:
        if endpoint is Endpoint.COMPLETIONS:
            raise InvalidRequest("streaming legacy completions is not supported on a UbiAI route")
        reply = await self.complete(Endpoint.CHAT, body, wire)
        return _SyntheticStream(reply.body)

    async def aclose(self) -> None:
        await self._pool.aclose()
