"""The on-prem pool with two real workers (tiny llama), and one trace across gateway and worker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.fixtures.pki import CertPair
from tests.gateway.conftest import RunningGateway
from tests.worker.worker_support import run_worker, worker_config


def _served(worker: object) -> float:
    text: str
    with worker.client() as client:  # type: ignore[attr-defined]
        text = client.get("/metrics").text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("bastion_worker_request_success_total")
    )


def test_two_workers_share_the_load_and_one_trace_spans_gateway_and_worker(
    start_gateway: Callable[..., RunningGateway], billing: CertPair, tiny_model_dir: Path
) -> None:
    """Requests over the on-prem route reach both workers; the worker's span continues the
    gateway's trace (W3C traceparent)."""
    gateway_spans, worker_spans = InMemorySpanExporter(), InMemorySpanExporter()
    config = worker_config(tiny_model_dir)
    with (
        run_worker(config, span_processor=SimpleSpanProcessor(worker_spans)) as first,
        run_worker(config) as second,
    ):
        gateway = start_gateway(
            span_processor=SimpleSpanProcessor(gateway_spans),
            upstreams={
                "local": {
                    "kind": "onprem",
                    "base_url": [first.url + "/v1", second.url + "/v1"],
                    "model_map": {"chat-default": "tiny"},
                }
            },
        )
        import concurrent.futures

        def ask(i: int) -> int:
            with gateway.client(billing) as client:
                body = {
                    "model": "chat-default",
                    "max_tokens": 4,
                    "messages": [{"role": "user", "content": f"hello {i}"}],
                }
                return client.post("/v1/chat/completions", json=body).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(ask, range(16)))
        assert codes == [200] * 16
        assert _served(first) > 0
        assert _served(second) > 0
        assert _served(first) + _served(second) == 16
    gateway_traces = {
        s.context.trace_id
        for s in gateway_spans.get_finished_spans()
        if s.name == "bastion.request"
    }
    worker_traces = {
        s.context.trace_id
        for s in worker_spans.get_finished_spans()
        if s.name == "bastion.worker.request"
    }
    assert worker_traces
    assert worker_traces <= gateway_traces


def test_pool_serves_when_a_worker_is_not_running(
    start_gateway: Callable[..., RunningGateway], billing: CertPair, tiny_model_dir: Path
) -> None:
    """With one worker address refusing connections, the other real worker answers everything."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/v1"
    with run_worker(worker_config(tiny_model_dir)) as alive:
        gateway = start_gateway(
            upstreams={
                "local": {
                    "kind": "onprem",
                    "base_url": [dead, alive.url + "/v1"],
                    "model_map": {"chat-default": "tiny"},
                }
            }
        )
        with gateway.client(billing) as client:
            body = {
                "model": "chat-default",
                "max_tokens": 4,
                "messages": [{"role": "user", "content": "hi"}],
            }
            codes = [client.post("/v1/chat/completions", json=body).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 200]
