"""OpenAI-compatible upstreams: managed APIs and Bastion's own workers (vLLM/TGI alike).

One shared ``httpx2.AsyncClient`` per base URL (keep-alive pool, explicit ``Timeout``). Several
base URLs form a pool balanced by least outstanding requests, skipping URLs whose circuit is open.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx2

from gateway.config import UpstreamConfig
from gateway.errors import InvalidRequest, ServiceUnavailable, UpstreamError
from gateway.upstreams.base import (
    CircuitBreaker,
    Endpoint,
    SSEParser,
    UpstreamReply,
    map_transport_errors,
)
from pki.secret import Secret
from pki.tls import client_context

__all__ = ["OpenAIUpstream", "build_ssl_context"]


def build_ssl_context(config: UpstreamConfig) -> ssl.SSLContext | bool:
    tls = config.tls
    if tls.ca is None:
        return True  # the system trust store (managed APIs on the internet)
    return client_context(ca=tls.ca, cert=tls.cert, key=tls.key)


@dataclass
class _Target:
    url: str
    client: httpx2.AsyncClient
    breaker: CircuitBreaker
    in_flight: int = field(default=0)


class _Stream:
    def __init__(self, name: str, target: _Target, response: httpx2.Response) -> None:
        self._name = name
        self._target = target
        self._response = response
        self._closed = False

    async def events(self) -> AsyncIterator[str]:
        parser = SSEParser()
        with map_transport_errors(self._name, self._target.breaker):
            async for chunk in self._response.aiter_raw():
                for data in parser.feed(chunk):
                    if data.strip() == "[DONE]":
                        self._target.breaker.success()
                        return
                    yield data
        self._target.breaker.success()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._target.in_flight -= 1
            await self._response.aclose()


class OpenAIUpstream:
    def __init__(self, name: str, config: UpstreamConfig, api_key: Secret | None) -> None:
        self.name = name
        self.kind: str = config.kind
        self._config = config
        self._api_key = api_key
        verify = build_ssl_context(config)
        timeout = httpx2.Timeout(
            connect=config.timeout.connect,
            read=config.timeout.read,
            write=config.timeout.write,
            pool=config.timeout.pool,
        )
        limits = httpx2.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=config.max_connections,
        )
        self._targets = [
            _Target(
                url=url.rstrip("/"),
                client=httpx2.AsyncClient(
                    base_url=url.rstrip("/") + "/", timeout=timeout, limits=limits, verify=verify
                ),
                breaker=CircuitBreaker(
                    name,
                    threshold=config.circuit.failure_threshold,
                    reset_after=config.circuit.reset_after_s,
                ),
            )
            for url in config.urls()
        ]

    def upstream_model(self, alias: str) -> str:
        return self._config.model_map.get(alias, alias)

    def circuit_state(self) -> str:
        states = {t.breaker.state.value for t in self._targets}
        return "closed" if "closed" in states else sorted(states)[0]

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self._api_key is not None:
            headers["authorization"] = f"Bearer {self._api_key.reveal()}"
        return headers

    def _pick(self) -> _Target:
        candidates = sorted(self._targets, key=lambda t: t.in_flight)
        last_error: ServiceUnavailable | None = None
        for target in candidates:
            try:
                target.breaker.before_call()
            except ServiceUnavailable as exc:
                last_error = exc
                continue
            return target
        if last_error is None:  # pragma: no cover - config guarantees at least one URL
            raise ServiceUnavailable(f"upstream '{self.name}' has no targets")
        raise last_error

    def _check_status(self, target: _Target, status: int, payload: Any) -> None:
        if status < 400:
            target.breaker.success()
            return
        if status >= 500 or status in (401, 403, 404, 408, 429):
            # The upstream's own failure (or our credentials): the caller cannot fix it.
            if status >= 500 or status == 408:
                target.breaker.failure()
            else:
                target.breaker.success()
            retry = 5.0 if status == 429 else None
            if status == 429:
                raise ServiceUnavailable(
                    f"upstream '{self.name}' is rate limiting",
                    code="upstream_rate_limited",
                    retry_after=retry,
                )
            raise UpstreamError(f"upstream '{self.name}' answered HTTP {status}")
        target.breaker.success()
        message = "the upstream refused the request"
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            message = f"upstream refused the request: {payload['error'].get('message', '')}"[:500]
        raise InvalidRequest(message, code="upstream_invalid_request")

    async def complete(self, endpoint: Endpoint, body: dict[str, Any]) -> UpstreamReply:
        target = self._pick()
        target.in_flight += 1
        try:
            with map_transport_errors(self.name, target.breaker):
                response = await target.client.post(
                    endpoint.value, json=body, headers=self._headers()
                )
                payload = response.json()
            self._check_status(target, response.status_code, payload)
            if not isinstance(payload, dict):
                target.breaker.failure()
                raise UpstreamError(f"upstream '{self.name}' answered with a non-object JSON body")
            return UpstreamReply(response.status_code, payload)
        finally:
            target.in_flight -= 1

    async def stream(self, endpoint: Endpoint, body: dict[str, Any]) -> _Stream:
        target = self._pick()
        target.in_flight += 1
        try:
            with map_transport_errors(self.name, target.breaker):
                request = target.client.build_request(
                    "POST", endpoint.value, json=body, headers=self._headers()
                )
                response = await target.client.send(request, stream=True)
                if response.status_code >= 400:
                    raw = await response.aread()
                    await response.aclose()
                    try:
                        payload: Any = httpx2.Response(200, content=raw).json()
                    except ValueError:
                        payload = None
                    self._check_status(target, response.status_code, payload)
        except BaseException:
            target.in_flight -= 1
            raise
        return _Stream(self.name, target, response)

    async def aclose(self) -> None:
        for target in self._targets:
            await target.client.aclose()
