"""OpenAI-compatible upstreams: managed APIs and Bastion's own workers (vLLM/TGI alike).

One shared ``httpx2.AsyncClient`` per base URL (keep-alive pool, explicit ``Timeout``). Several
base URLs form a pool balanced by least outstanding requests, skipping URLs whose circuit is open.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx2

from gateway.config import UpstreamConfig
from gateway.errors import InvalidRequest, RateLimited, ServiceUnavailable, UpstreamError
from gateway.telemetry import traceparent_headers
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
    busy_until: float = field(default=0.0)  # after a 429/503 with Retry-After


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
        if self.kind == "onprem":
            # One trace across gateway and worker; trace ids never go to managed APIs.
            headers.update(traceparent_headers())
        return headers

    def _candidates(self) -> list[_Target]:
        """Targets by least outstanding requests, skipping busy ones and open circuits."""
        now = time.monotonic()
        ready = [t for t in self._targets if t.busy_until <= now]
        if not ready:
            wait = min(t.busy_until for t in self._targets) - now
            raise RateLimited(
                f"every target of upstream '{self.name}' is at capacity; retry after the indicated time",
                code="upstream_busy",
                retry_after=max(wait, 1.0),
            )
        return sorted(ready, key=lambda t: t.in_flight)

    def _pick(self, tried: set[int]) -> _Target:
        last_error: ServiceUnavailable | None = None
        for target in self._candidates():
            if id(target) in tried:
                continue
            try:
                target.breaker.before_call()
            except ServiceUnavailable as exc:
                last_error = exc
                continue
            tried.add(id(target))
            return target
        if last_error is None:
            raise ServiceUnavailable(f"no target of upstream '{self.name}' could take the request")
        raise last_error

    @staticmethod
    def _busy(target: _Target, response: httpx2.Response) -> bool:
        """A 429 or 503 (a worker overloaded or still warming up): mark the target busy for its
        Retry-After and let the caller try another one."""
        if response.status_code not in (429, 503):
            return False
        try:
            retry = float(response.headers.get("retry-after", "1"))
        except ValueError:
            retry = 1.0
        target.busy_until = time.monotonic() + min(max(retry, 0.5), 60.0)
        return True

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
            if status in (429, 503) and target.busy_until > time.monotonic():
                # Every other target was tried (or there is none): the caller retries later.
                raise RateLimited(
                    f"upstream '{self.name}' is at capacity; retry after the indicated time",
                    code="upstream_busy",
                    retry_after=max(target.busy_until - time.monotonic(), 1.0),
                )
            raise UpstreamError(f"upstream '{self.name}' answered HTTP {status}")
        target.breaker.success()
        message = "the upstream refused the request"
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            message = f"upstream refused the request: {payload['error'].get('message', '')}"[:500]
        raise InvalidRequest(message, code="upstream_invalid_request")

    async def complete(self, endpoint: Endpoint, body: dict[str, Any]) -> UpstreamReply:
        tried: set[int] = set()
        while True:
            target = self._pick(tried)
            target.in_flight += 1
            try:
                try:
                    response = await target.client.post(
                        endpoint.value, json=body, headers=self._headers()
                    )
                except httpx2.ConnectError:
                    # Nothing was sent: another target may take it (a worker that is down).
                    target.breaker.failure()
                    if len(tried) < len(self._targets):
                        continue
                    raise
                if self._busy(target, response) and len(tried) < len(self._targets):
                    continue
                with map_transport_errors(self.name, target.breaker):
                    payload = response.json()
                self._check_status(target, response.status_code, payload)
                if not isinstance(payload, dict):
                    target.breaker.failure()
                    raise UpstreamError(
                        f"upstream '{self.name}' answered with a non-object JSON body"
                    )
                return UpstreamReply(response.status_code, payload)
            except httpx2.HTTPError as exc:
                with map_transport_errors(self.name, target.breaker):
                    raise exc from None
            finally:
                target.in_flight -= 1

    async def stream(self, endpoint: Endpoint, body: dict[str, Any]) -> _Stream:
        tried: set[int] = set()
        while True:
            target = self._pick(tried)
            target.in_flight += 1
            try:
                request = target.client.build_request(
                    "POST", endpoint.value, json=body, headers=self._headers()
                )
                try:
                    response = await target.client.send(request, stream=True)
                except httpx2.ConnectError:
                    target.breaker.failure()
                    if len(tried) < len(self._targets):
                        target.in_flight -= 1
                        continue
                    raise
                if response.status_code >= 400:
                    raw = await response.aread()
                    await response.aclose()
                    if self._busy(target, response) and len(tried) < len(self._targets):
                        target.in_flight -= 1
                        continue
                    try:
                        payload: Any = httpx2.Response(200, content=raw).json()
                    except ValueError:
                        payload = None
                    self._check_status(target, response.status_code, payload)
            except httpx2.HTTPError as exc:
                target.in_flight -= 1
                with map_transport_errors(self.name, target.breaker):
                    raise exc from None
            except BaseException:
                target.in_flight -= 1
                raise
            return _Stream(self.name, target, response)

    async def aclose(self) -> None:
        for target in self._targets:
            await target.client.aclose()
