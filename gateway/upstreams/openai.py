"""OpenAI-compatible upstreams: managed APIs and Bastion's own workers (vLLM/TGI alike).

Only the wire format lives here: the request (``POST <base_url>/<endpoint>`` with a Bearer key,
its body the bytes of :meth:`OpenAIUpstream.encode`, or the exact ``wire`` bytes the caller
scanned;
a ``traceparent`` to on-prem workers only), what a usable answer is (a JSON object with a
``choices`` list), and how a stream ends (``data: [DONE]``, or the body's end after an event
with a ``finish_reason``, as some servers omit ``[DONE]``). Targets, picking, retries, the
breaker and the bounds are ``_pool.UpstreamPool``'s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx2

from gateway.config import UpstreamConfig
from gateway.errors import UpstreamError
from gateway.telemetry import traceparent_headers
from gateway.upstreams._limits import parse_json
from gateway.upstreams._pool import RequestBuilder, UpstreamPool, build_ssl_context
from gateway.upstreams._stream import EventStream
from gateway.upstreams.base import Endpoint, UpstreamReply
from gateway.vocabulary import RouteKind
from pki.secret import Secret

__all__ = ["OpenAIUpstream", "build_ssl_context"]


def _answer(name: str) -> Callable[[Any], dict[str, Any]]:
    def parse(payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise UpstreamError(f"upstream '{name}' answered with a non-object JSON body")
        if not isinstance(payload.get("choices"), list):
            raise UpstreamError(f"upstream '{name}' answered without a 'choices' list")
        return payload

    return parse


class _ChunkDecoder:
    """The events of an OpenAI stream: each a JSON object (a ``chat.completion.chunk`` or a
    ``text_completion``), ending with ``data: [DONE]``. An ``error`` object in the stream (vLLM
    sends one when generation fails) is a failure; its text is not repeated (it may echo the
    prompt)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._finished = False
        self.ended = False

    def event(self, sse: httpx2.ServerSentEvent) -> str | None:
        data = sse.data
        if data.strip() == "[DONE]":
            self.ended = True
            return None
        if not data:
            return None  # an event of only id:/retry: fields carries no payload
        event = parse_json(self._name, data)
        if not isinstance(event, dict):
            raise UpstreamError(
                f"upstream '{self._name}' sent a stream event that is not an object"
            )
        if "error" in event or sse.event == "error":
            raise UpstreamError(f"upstream '{self._name}' reported an error in the stream")
        choices = event.get("choices")
        if not isinstance(choices, list):
            raise UpstreamError(f"upstream '{self._name}' sent a stream event without 'choices'")
        if any(isinstance(c, dict) and c.get("finish_reason") for c in choices):
            self._finished = True
        return data

    def end(self) -> None:
        if not self._finished:
            raise UpstreamError(
                f"upstream '{self._name}' ended the stream before [DONE] and without a "
                "finish_reason: the answer was cut"
            )


class OpenAIUpstream:
    def __init__(self, name: str, config: UpstreamConfig, api_key: Secret | None) -> None:
        self.name = name
        self.kind: RouteKind = config.kind
        self._config = config
        self._api_key = api_key
        self._pool = UpstreamPool(name, config)
        self._parse = _answer(name)

    def upstream_model(self, alias: str) -> str:
        return self._config.model_map.get(alias, alias)

    def circuit_state(self) -> str:
        return self._pool.circuit_state()

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self._api_key is not None:
            headers["authorization"] = f"Bearer {self._api_key.reveal()}"
        if self.kind is RouteKind.ONPREM:
            # One trace across gateway and worker; trace ids never go to managed APIs.
            headers.update(traceparent_headers())
        return headers

    def encode(self, endpoint: Endpoint, body: Mapping[str, Any]) -> bytes:
        """The exact request body bytes for ``body`` (compact JSON, UTF-8)."""
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    def _builder(self, endpoint: Endpoint, wire: bytes) -> RequestBuilder:
        def build(client: httpx2.AsyncClient, url: str) -> httpx2.Request:
            return client.build_request(
                "POST", f"{url}/{endpoint.value}", content=wire, headers=self._headers()
            )

        return build

    async def complete(
        self, endpoint: Endpoint, body: dict[str, Any], wire: bytes | None = None
    ) -> UpstreamReply:
        wire = self.encode(endpoint, body) if wire is None else wire
        payload = await self._pool.request_json(self._builder(endpoint, wire), self._parse)
        return UpstreamReply(200, payload)

    async def stream(
        self, endpoint: Endpoint, body: dict[str, Any], wire: bytes | None = None
    ) -> EventStream:
        wire = self.encode(endpoint, body) if wire is None else wire
        return await self._pool.request_stream(
            self._builder(endpoint, wire), _ChunkDecoder(self.name)
        )

    async def aclose(self) -> None:
        await self._pool.aclose()
