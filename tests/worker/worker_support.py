"""Helpers for the worker suites: configs, a real uvicorn worker on 127.0.0.1, SSE reading."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from inference.config import WorkerConfig, config_from_mapping
from inference.serve import build_uvicorn_config
from inference.server import WorkerState, create_app

READY_TIMEOUT_S = 120.0


def worker_config(
    model_dir: Path,
    *,
    batching: dict[str, Any] | None = None,
    runtime: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    warmup: dict[str, Any] | None = None,
) -> WorkerConfig:
    """A plain-HTTP worker config on an ephemeral port serving ``model_dir`` as ``tiny``."""
    data: dict[str, Any] = {
        "model": model or {"source": "dir", "path": str(model_dir), "name": "tiny"},
        "runtime": {"device": "cpu", **(runtime or {})},
        "batching": {
            "max_batch_size": 8,
            "kv_cache_tokens": 4096,
            "max_input_tokens": 256,
            "max_total_tokens": 512,
            "max_prefill_tokens": 1024,
            "max_queue_tokens": 8192,
            "default_max_tokens": 16,
            **(batching or {}),
        },
        "warmup": {"prompt_tokens": 8, "decode_steps": 2, **(warmup or {})},
        "server": server or {"host": "127.0.0.1", "port": 0, "insecure_plain_http": True},
    }
    return config_from_mapping(data, source="test")


class _NoSignals(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass
class RunningWorker:
    url: str
    state: WorkerState
    server: uvicorn.Server

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, **{"timeout": 60.0, **kwargs})

    def metric(self, name: str) -> float | None:
        """The value of an unlabelled series on /metrics, or None when absent."""
        with self.client() as client:
            text = client.get("/metrics").text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no request runs or waits (the scheduler publishes after each step)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = self.metric("bastion_worker_num_requests_running")
            waiting = self.metric("bastion_worker_num_requests_waiting")
            usage = self.metric("bastion_worker_kv_cache_usage_ratio")
            if running == 0 and waiting == 0 and usage == 0:
                return
            time.sleep(0.05)
        raise AssertionError("worker did not become idle")


@contextlib.contextmanager
def run_worker(
    config: WorkerConfig,
    *,
    before_ready: Callable[[], None] | None = None,
    wait_ready: bool = True,
    scheme: str = "http",
    client_kwargs: dict[str, Any] | None = None,
    span_processor: Any = None,
) -> Iterator[RunningWorker]:
    """Start the worker app under uvicorn in a thread; stop it afterwards."""
    app = create_app(config, before_ready=before_ready, span_processor=span_processor)
    server = _NoSignals(build_uvicorn_config(config, app))
    thread = threading.Thread(target=server.run, name="test-worker", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("worker server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    running = RunningWorker(f"{scheme}://127.0.0.1:{port}", app.state.worker, server)
    try:
        if wait_ready:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while running.state.phase != "ready":
                if running.state.phase == "failed" or time.monotonic() > deadline:
                    raise AssertionError(f"worker not ready: {running.state.failure}")
                time.sleep(0.02)
        yield running
    finally:
        server.should_exit = True
        thread.join(60)


def chat_body(content: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "tiny",
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        **extra,
    }


def read_sse(response: httpx.Response) -> tuple[list[dict[str, Any]], bool]:
    """Parse an SSE body: the JSON events, and whether it ended with ``data: [DONE]``."""
    events: list[dict[str, Any]] = []
    done = False
    for line in response.iter_lines():
        if not line.startswith("data: "):
            continue
        payload = line.removeprefix("data: ")
        if payload == "[DONE]":
            done = True
            break
        events.append(json.loads(payload))
    return events, done


def stream_text(events: list[dict[str, Any]]) -> str:
    parts = []
    for event in events:
        for choice in event.get("choices", []):
            delta = choice.get("delta", {})
            parts.append(delta.get("content") or choice.get("text") or "")
    return "".join(parts)
