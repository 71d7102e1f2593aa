"""Int8 dynamic quantization: the quality report, and a worker serving the quantized model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from inference.artifact import load_model_dir
from inference.quantize import quantize_report, register_quantize
from tests.worker.worker_support import chat_body, run_worker, worker_config


def test_report_measures_what_int8_trades(tiny_model_dir: Path) -> None:
    """The report has finite perplexities, agreement shares in [0, 1] and smaller Linear weights."""
    loaded = load_model_dir(tiny_model_dir, dtype="float32")
    report = quantize_report(loaded.model, loaded.tokenizer, method="int8")
    assert report.eval_tokens > 100
    assert 1.0 < report.perplexity_original < 1e6
    assert 1.0 < report.perplexity_quantized < 1e6
    assert 0.0 <= report.top1_agreement <= 1.0
    assert 0.0 <= report.greedy_token_agreement <= 1.0
    assert report.linear_bytes_quantized < 0.75 * report.linear_bytes_original


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


def test_worker_serves_the_int8_model(tiny_model_dir: Path) -> None:
    """``runtime.quantization: int8`` loads, warms up and answers a chat."""
    config = worker_config(tiny_model_dir, runtime={"quantization": "int8"})
    with run_worker(config) as worker, worker.client() as client:
        response = client.post("/v1/chat/completions", json=chat_body("Hello", max_tokens=6))
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] <= 6
