"""Worker configuration: unknown keys and impossible lever combinations are refused up front."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from inference.config import (
    RuntimeConfig,
    check_runtime,
    config_from_mapping,
    load_config,
)
from inference.errors import WorkerConfigError

_PLAIN = {"insecure_plain_http": True}


def _base(**sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model": {"source": "dir", "path": "/models/tiny"},
        "server": dict(_PLAIN),
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({**_base(), "modle": {}}, "unknown key 'modle'"),
        (_base(batching={"max_batch": 4}), "unknown key 'batching.max_batch'"),
        (_base(runtime={"dtype": "float8"}), "runtime.dtype"),
        (_base(runtime={"attn_implementation": "paged"}), "paged"),
        (_base(runtime={"quantization": "int8"}), "Set dtype: bfloat16"),
        (_base(runtime={"quantization": "int4", "dtype": "float32"}), "Set dtype: bfloat16"),
        (_base(runtime={"attn_implementation": "flash_attention_2"}), "float16 or bfloat16"),
        (
            _base(
                batching={
                    "kv_cache_tokens": 100,
                    "max_total_tokens": 200,
                    "max_input_tokens": 50,
                    "max_queue_tokens": 1000,
                }
            ),
            "kv_cache_tokens (100)",
        ),
        (_base(batching={"max_input_tokens": 600, "max_total_tokens": 512}), "max_input_tokens"),
        (_base(batching={"max_prefill_tokens": 10}), "max_prefill_tokens (10)"),
        (_base(server={"insecure_plain_http": False}), "no 'tls' section"),
        (_base(model={"source": "encrypted"}), "needs an 'hsm' section"),
        (_base(warmup={"batch_sizes": [64]}), "warmup batch size 64"),
    ],
    ids=[
        "unknown-top-level",
        "unknown-nested",
        "bad-dtype",
        "paged-attention",
        "int8-with-float32",
        "int4-with-float32",
        "flash-with-fp32",
        "kv-below-total",
        "input-above-total",
        "prefill-below-input",
        "no-tls",
        "encrypted-without-hsm",
        "warmup-beyond-batch",
    ],
)
def test_invalid_config_is_refused_with_the_reason(data: dict[str, Any], needle: str) -> None:
    """Each invalid file is refused with a message naming the key or combination at fault."""
    with pytest.raises(WorkerConfigError) as info:
        config_from_mapping(data, source="w.yaml")
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("runtime", "cuda", "needle"),
    [
        ({"dtype": "float16"}, False, "float16"),
        ({"quantization": "nf4"}, False, "only on CUDA"),
        ({"attn_implementation": "flash_attention_2", "dtype": "bfloat16"}, False, "only on CUDA"),
        ({"device": "cuda"}, False, "no CUDA device"),
        ({"quantization": "int8", "dtype": "bfloat16"}, True, "CPU kernels only"),
        ({"quantization": "int4", "dtype": "bfloat16"}, True, "CPU kernels only"),
    ],
    ids=["fp16-cpu", "nf4-cpu", "flash-cpu", "cuda-missing", "int8-cuda", "int4-cuda"],
)
def test_machine_dependent_combinations_are_refused(
    runtime: dict[str, Any], cuda: bool, needle: str
) -> None:
    """Levers this machine cannot honour are refused before any weight is read."""
    with pytest.raises(WorkerConfigError) as info:
        check_runtime(RuntimeConfig.model_validate(runtime), cuda_available=cuda)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("runtime", "cuda", "device"),
    [({}, False, "cpu"), ({}, True, "cuda"), ({"dtype": "bfloat16"}, False, "cpu")],
    ids=["auto-cpu", "auto-cuda", "bf16-cpu"],
)
def test_valid_runtime_resolves_the_device(
    runtime: dict[str, Any], cuda: bool, device: str
) -> None:
    """``auto`` picks CUDA when present, else CPU; valid combinations pass."""
    assert check_runtime(RuntimeConfig.model_validate(runtime), cuda_available=cuda) == device


def test_yaml_file_resolves_relative_paths(tmp_path: Path) -> None:
    """Paths in the file are relative to the file's folder; the rest keeps its defaults."""
    path = tmp_path / "worker.yaml"
    path.write_text(
        "model: {source: dir, path: models/tiny}\n"
        "server:\n  tls: {cert: tls/w.crt, key: tls/w.key, ca: tls/ca.crt}\n",
        encoding="utf-8",
    )
    config = load_config(path)
    assert config.model.path == tmp_path / "models/tiny"
    assert config.server.tls is not None
    assert config.server.tls.ca == tmp_path / "tls/ca.crt"
    assert config.server.tls.allowed() == {"spiffe://bastion.internal/bastion/gateway"}


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    """A YAML syntax error is reported at file:line:col, not a traceback."""
    path = tmp_path / "worker.yaml"
    path.write_text("model:\n  source: dir\n  path: [unclosed\n", encoding="utf-8")
    with pytest.raises(WorkerConfigError, match=r"worker\.yaml:\d+:\d+: YAML error"):
        load_config(path)


def test_cli_refuses_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``bastion worker --config`` exits 1 with the reason when the file is invalid."""
    path = tmp_path / "worker.yaml"
    path.write_text("model: {source: dir, path: m}\nserver: {insecure_plain_http: true}\n"
                    "runtime: {dtpye: float32}\n", encoding="utf-8")  # fmt: skip
    assert main(["worker", "--config", str(path), "--check"]) == 1
    assert f"{path}:3:11: unknown key 'runtime.dtpye'" in capsys.readouterr().err


def test_cli_check_accepts_a_valid_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--check`` validates the file for this machine and exits 0 without loading weights."""
    path = tmp_path / "worker.yaml"
    path.write_text("model: {source: dir, path: m}\nserver: {insecure_plain_http: true}\n"
                    "runtime: {device: cpu}\n", encoding="utf-8")  # fmt: skip
    assert main(["worker", "--config", str(path), "--check"]) == 0
    assert "valid for device cpu" in capsys.readouterr().out


def test_cli_worker_exits_1_when_the_model_cannot_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``bastion worker`` serves, fails to load the model, and exits 1 instead of running unready."""
    path = tmp_path / "worker.yaml"
    path.write_text(
        f"model: {{source: dir, path: {tmp_path / 'missing'}}}\n"
        "server: {insecure_plain_http: true, host: 127.0.0.1, port: 0}\n"
        "runtime: {device: cpu}\n",
        encoding="utf-8",
    )
    assert main(["worker", "--config", str(path)]) == 1
    assert "does not exist" in caplog.text
