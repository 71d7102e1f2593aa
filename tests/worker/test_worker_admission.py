"""Continuous batching under load: equal outputs, overload → 429, disconnects, readiness."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.worker.worker_support import (
    RunningWorker,
    chat_body,
    read_sse,
    run_worker,
    stream_text,
    worker_config,
)

_PROMPTS = [
    "What is the capital of France?",
    "Hello, world!",
    "Patients, claims and invoices are processed.",
    "The quick brown fox jumps over the lazy dog.",
    "Numbers 0 1 2 3 4 5 6 7 8 9",
    "Every decision is written to an audit trail.",
    "Regulated data stays on premises.",
    "Tickets and accounts.",
]


def _stream(worker: RunningWorker, content: str, max_tokens: int) -> str:
    with (
        worker.client() as client,
        client.stream(
            "POST",
            "/v1/chat/completions",
            json=chat_body(content, max_tokens=max_tokens, stream=True),
        ) as response,
    ):
        assert response.status_code == 200
        events, done = read_sse(response)
    assert done
    return stream_text(events)


def test_concurrent_streams_equal_single_request_outputs(tiny_model_dir: Path) -> None:
    """Greedy outputs of 16 concurrent streams (joining, leaving) equal each one run alone."""
    jobs = [(p, 8 + 5 * (i % 5)) for i, p in enumerate(_PROMPTS)] * 2
    with run_worker(worker_config(tiny_model_dir, batching={"max_batch_size": 16})) as worker:
        alone = [_stream(worker, p, n) for p, n in jobs[: len(_PROMPTS)]]
        with ThreadPoolExecutor(len(jobs)) as pool:
            together = list(pool.map(lambda job: _stream(worker, *job), jobs))
        worker.wait_idle()
    assert together == alone * 2


def test_overload_gets_429_with_retry_after_and_the_rest_complete(tiny_model_dir: Path) -> None:
    """Far more requests than capacity: some are refused with 429 + Retry-After, none hang."""
    config = worker_config(
        tiny_model_dir,
        batching={"max_batch_size": 1, "max_total_tokens": 128, "max_input_tokens": 64,
                  "kv_cache_tokens": 128, "max_queue_tokens": 200, "max_prefill_tokens": 64},
    )  # fmt: skip

    def call(i: int) -> httpx.Response:
        with worker.client() as client:
            return client.post("/v1/chat/completions", json=chat_body(f"Hello {i}", max_tokens=64))

    with run_worker(config) as worker:
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(call, range(16)))
        worker.wait_idle()
        rejected = _labelled(worker, 'bastion_worker_requests_rejected_total{reason="queue_full"}')
        kv_bytes = worker.metric("bastion_worker_kv_cache_bytes")
    refused = [r for r in responses if r.status_code == 429]
    assert rejected == len(refused)
    served = [r for r in responses if r.status_code == 200]
    assert refused
    assert served
    assert len(refused) + len(served) == 16
    for response in refused:
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
    for response in served:
        choice = response.json()["choices"][0]
        assert choice["finish_reason"] in {"stop", "length"}
        assert 1 <= response.json()["usage"]["completion_tokens"] <= 64
    # one row of at most 2 x max_total_tokens columns: the KV cache never grew past its bound
    assert kv_bytes is not None
    assert kv_bytes <= 1 * 2 * 128 * 2 * 2 * 2 * 16 * 4


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_client_disconnect_frees_the_slot(tiny_model_dir: Path, stream: bool) -> None:
    """A client that goes away mid-generation is cancelled and its slot serves the next one."""
    # long enough (thousands of steps) that the client always leaves mid-generation
    config = worker_config(
        tiny_model_dir,
        batching={"max_batch_size": 1, "max_total_tokens": 4096, "kv_cache_tokens": 4096},
    )
    with run_worker(config) as worker:
        body = chat_body("Hello", max_tokens=4000, stream=stream)
        if stream:
            with (
                worker.client() as client,
                client.stream("POST", "/v1/chat/completions", json=body) as response,
            ):
                data_lines = (line for line in response.iter_lines() if line.startswith("data: {"))
                next(data_lines)  # the role chunk
                next(data_lines)  # a first token: the request runs
                assert _eventually(
                    lambda: worker.metric("bastion_worker_num_requests_running") == 1
                )
        else:
            timeout = httpx.Timeout(10.0, read=0.5)
            with worker.client(timeout=timeout) as client, pytest.raises(httpx.ReadTimeout):
                client.post("/v1/chat/completions", json=body)
        worker.wait_idle()
        generated = worker.metric("bastion_worker_generation_tokens_total") or 0
        aborted = _labelled(worker, 'bastion_worker_request_success_total{finished_reason="abort"}')
        with worker.client() as client:
            after = client.post("/v1/chat/completions", json=chat_body("Hi", max_tokens=4))
    assert aborted == 1
    assert generated < 4000  # the cancelled request stopped early
    assert after.status_code == 200


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _labelled(worker: RunningWorker, series: str) -> float | None:
    with worker.client() as client:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith(series + " "):
                return float(line.split()[1])
    return None


def test_readyz_is_503_until_warm_up_finished(tiny_model_dir: Path) -> None:
    """/readyz and generation answer 503 while warming up, then ready; /healthz stays 200."""
    gate = threading.Event()
    with (
        run_worker(
            worker_config(tiny_model_dir), before_ready=lambda: gate.wait(60), wait_ready=False
        ) as worker,
        worker.client() as client,
    ):
        deadline = time.monotonic() + 60
        while worker.state.phase != "warming_up" and time.monotonic() < deadline:
            time.sleep(0.01)
        not_ready = client.get("/readyz")
        refused = client.post("/v1/chat/completions", json=chat_body("Hi", max_tokens=2))
        health = client.get("/healthz")
        gate.set()
        while worker.state.phase != "ready" and time.monotonic() < deadline:
            time.sleep(0.01)
        ready = client.get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["status"] == "warming_up"
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "not_ready"
    assert health.status_code == 200
    assert ready.status_code == 200


def test_failed_load_is_never_ready(tmp_path: Path) -> None:
    """A model that cannot load leaves the worker unready and unhealthy, with the reason."""
    config = worker_config(tmp_path / "missing")
    with run_worker(config, wait_ready=False) as worker, worker.client() as client:
        deadline = time.monotonic() + 30
        while worker.state.phase != "failed" and time.monotonic() < deadline:
            time.sleep(0.01)
        ready = client.get("/readyz")
        health = client.get("/healthz")
    assert ready.status_code == 503
    assert "does not exist" in ready.json()["reason"]
    assert health.status_code == 503
