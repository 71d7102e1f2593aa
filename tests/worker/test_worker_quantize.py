"""Weight-only int8/int4 quantization: the quality report, and a worker serving the result."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from inference.artifact import load_model_dir
from inference.quantize import quantize_report, register_quantize
from tests.worker.worker_support import chat_body, run_worker, worker_config


@pytest.mark.parametrize(
    ("method", "max_bytes_share"),
    [("int8", 0.30), ("int4", 0.20), ("bf16", 0.51)],
    ids=["int8", "int4", "bf16"],
)
def test_report_measures_what_each_method_trades(
    tiny_model_dir: Path, method: str, max_bytes_share: float
) -> None:
    """The report has finite perplexities, agreement shares in [0, 1] and smaller Linear weights."""
    loaded = load_model_dir(tiny_model_dir, dtype="float32")
    report = quantize_report(loaded.model, loaded.tokenizer, method=method)
    assert report.method == method
    assert report.eval_tokens > 100
    assert 1.0 < report.perplexity_original < 1e6
    assert 1.0 < report.perplexity_quantized < 1e6
    assert 0.0 <= report.top1_agreement <= 1.0
    assert 0.0 <= report.greedy_token_agreement <= 1.0
    assert report.linear_bytes_quantized < max_bytes_share * report.linear_bytes_original


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_weight_only_linear_is_close_to_float(method: str) -> None:
    """A quantized linear map stays within its quantization step of the float one."""
    import torch

    from inference._weightonly import quantized_linear

    torch.manual_seed(0)
    weight = torch.randn(72, 64)  # 72 output rows: not a multiple of 16 (int4 pads)
    x = torch.randn(5, 64).bfloat16()
    got = quantized_linear(weight, method, torch.bfloat16)(x).float()
    want = x.float() @ weight.T
    tolerance = 0.05 if method == "int8" else 0.3
    assert got.shape == want.shape
    assert (got - want).abs().mean() / want.abs().mean() < tolerance


def test_quantize_command_writes_the_json_report(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``quantize SRC --method int8 --out FILE`` prints the report and writes it as JSON."""
    parser = argparse.ArgumentParser()
    register_quantize(parser.add_subparsers())
    out = tmp_path / "report.json"
    args = parser.parse_args(
        ["quantize", str(tiny_model_dir), "--method", "int8", "--out", str(out)]
    )
    assert args.func(args) == 0
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written["method"] == "int8"
    assert "perplexity_increase" in written
    assert "greedy token agreement" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_worker_serves_the_quantized_model(tiny_model_dir: Path, method: str) -> None:
    """``runtime.quantization`` int8/int4 (bfloat16) loads, warms up and answers a chat."""
    config = worker_config(tiny_model_dir, runtime={"quantization": method, "dtype": "bfloat16"})
    with run_worker(config) as worker, worker.client() as client:
        response = client.post("/v1/chat/completions", json=chat_body("Hello", max_tokens=6))
        assert worker.state.scheduler is not None
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] <= 6
