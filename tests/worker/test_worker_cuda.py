"""CUDA smoke run: load, generate, and the GPU-only series appear (skipped without a GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.worker.worker_support import chat_body, run_worker, worker_config

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU host)"
)


def test_cuda_worker_generates_and_exports_gpu_metrics(tiny_model_dir: Path) -> None:
    """On CUDA the worker serves a chat and exports GPU memory quantiles and kernel time."""
    config = worker_config(tiny_model_dir, runtime={"device": "cuda", "dtype": "bfloat16"})
    with run_worker(config) as worker, worker.client() as client:
        response = client.post("/v1/chat/completions", json=chat_body("Hello", max_tokens=8))
        text = client.get("/metrics").text
    assert response.status_code == 200
    assert 'bastion_worker_gpu_memory_used_bytes{quantile="0.99"}' in text
    assert 'bastion_worker_cuda_forward_kernel_seconds_count{phase="decode"}' in text
