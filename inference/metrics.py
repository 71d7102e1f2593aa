"""The worker's Prometheus metrics, named in the vLLM/TGI style under ``bastion_worker_``.

One :class:`WorkerMetrics` per server (its own registry, so tests can run several workers in one
process). GPU series (memory quantiles over a sliding window, CUDA kernel time per forward pass)
are registered only when the model runs on CUDA: on CPU they are absent, not zero.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["GPUMemoryWindow", "WorkerMetrics"]

_P = "bastion_worker_"
_LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0,
                    1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
                0.75, 1.0, 2.5)  # fmt: skip


class GPUMemoryWindow(Collector):
    """GPU memory in use, sampled at every forward pass; P50/P90/P99 over the last samples."""

    def __init__(self, *, size: int = 1024) -> None:
        self._samples: deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, used_bytes: float) -> None:
        with self._lock:
            self._samples.append(used_bytes)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            samples = sorted(self._samples)
        family = GaugeMetricFamily(
            _P + "gpu_memory_used_bytes",
            "GPU memory allocated by the worker, quantiles over a sliding window of forward passes",
            labels=["quantile"],
        )
        if samples:
            for q in (0.5, 0.9, 0.99):
                index = min(len(samples) - 1, round(q * (len(samples) - 1)))
                family.add_metric([str(q)], samples[index])
        yield family


class WorkerMetrics:
    """Every series the worker exports."""

    def __init__(self, *, cuda: bool) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests_running = Gauge(
            _P + "num_requests_running", "Sequences in the running batch", registry=r
        )
        self.requests_waiting = Gauge(
            _P + "num_requests_waiting", "Requests in the admission queue", registry=r
        )
        self.queue_tokens = Gauge(
            _P + "queue_tokens", "Tokens (prompt + max_tokens) waiting for admission", registry=r
        )
        self.kv_cache_usage = Gauge(
            _P + "kv_cache_usage_ratio",
            "Reserved KV-cache tokens over the configured budget (0..1)",
            registry=r,
        )
        self.kv_cache_bytes = Gauge(
            _P + "kv_cache_bytes", "Bytes allocated to the KV cache buffers", registry=r
        )
        self.ttft = Histogram(
            _P + "time_to_first_token_seconds",
            "Arrival to first generated token",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            _P + "inter_token_latency_seconds",
            "Time between consecutive tokens of one sequence",
            buckets=_ITL_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            _P + "e2e_request_latency_seconds",
            "Arrival to last token",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(_P + "prompt_tokens", "Prompt tokens prefilled", registry=r)
        self.generation_tokens = Counter(_P + "generation_tokens", "Tokens generated", registry=r)
        self.prefill_seconds = Counter(
            _P + "prefill_seconds", "Seconds spent in prefill forward passes", registry=r
        )
        self.decode_seconds = Counter(
            _P + "decode_seconds", "Seconds spent in decode forward passes", registry=r
        )
        self.throughput = Gauge(
            _P + "generation_throughput_tokens_per_second",
            "Generated tokens per second over the last 10 s",
            registry=r,
        )
        self.requests_finished = Counter(
            _P + "request_success", "Requests finished, by reason", ["finished_reason"], registry=r
        )
        self.requests_rejected = Counter(
            _P + "requests_rejected", "Requests refused, by reason", ["reason"], registry=r
        )
        self.load_seconds = Gauge(
            _P + "model_load_seconds", "Seconds taken to load (decrypt) the model", registry=r
        )
        self.warmup_seconds = Gauge(
            _P + "warmup_seconds", "Seconds taken by the warm-up passes", registry=r
        )
        self.ready = Gauge(_P + "ready", "1 once the model is loaded and warmed up", registry=r)
        self.gpu_memory: GPUMemoryWindow | None = None
        self.cuda_forward: Histogram | None = None
        if cuda:
            self.gpu_memory = GPUMemoryWindow()
            r.register(self.gpu_memory)
            self.cuda_forward = Histogram(
                _P + "cuda_forward_kernel_seconds",
                "CUDA kernel time per forward pass (CUDA events)",
                ["phase"],
                buckets=_ITL_BUCKETS,
                registry=r,
            )
        self._window: deque[tuple[float, int]] = deque()

    def add_generated(self, count: int) -> None:
        """Count generated tokens and refresh the 10-second throughput gauge."""
        now = time.monotonic()
        self.generation_tokens.inc(count)
        self._window.append((now, count))
        while self._window and self._window[0][0] < now - 10.0:
            self._window.popleft()
        span = max(now - self._window[0][0], 1e-3) if len(self._window) > 1 else 10.0
        self.throughput.set(sum(c for _, c in self._window) / span)

    def render(self) -> bytes:
        data: Any = generate_latest(self.registry)
        return bytes(data)
