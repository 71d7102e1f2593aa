"""Build a model and tokenizer from in-memory files: no path, no temporary file, no copy of the
weights. Tensors are views (``torch.frombuffer``) into the buffer holding ``model.safetensors``,
and ``from_pretrained(None, state_dict=...)`` assigns them to a model created on the meta device,
so peak memory stays near one copy of the weights (plus a copy only if ``dtype`` converts)."""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from typing import Any

from inference.artifact.errors import ModelDirError

__all__ = ["REQUIRED_FILES", "build_model", "safetensors_index"]

REQUIRED_FILES = ("config.json", "tokenizer.json", "model.safetensors")
WEIGHTS = "model.safetensors"
_MAX_ST_HEADER = 100 * 1024 * 1024
_DTYPE_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}
# Tokenizer options passed on from tokenizer_config.json; the rest (backend, class, hub paths) are
# file-loading details that do not apply to an in-memory build.
_TOKENIZER_KEYS = {
    "add_bos_token",
    "add_eos_token",
    "additional_special_tokens",
    "bos_token",
    "clean_up_tokenization_spaces",
    "cls_token",
    "eos_token",
    "extra_special_tokens",
    "mask_token",
    "model_max_length",
    "pad_token",
    "padding_side",
    "sep_token",
    "truncation_side",
    "unk_token",
    "chat_template",
}


def safetensors_index(buf: bytes | bytearray | memoryview) -> tuple[int, dict[str, Any]]:
    """Parse a safetensors header: (data start offset, {name: {dtype, shape, data_offsets}})."""
    if len(buf) < 8:
        raise ModelDirError("model.safetensors is shorter than its 8-byte header length")
    (n,) = struct.unpack("<Q", bytes(buf[:8]))
    if n > _MAX_ST_HEADER or 8 + n > len(buf):
        raise ModelDirError(f"model.safetensors header length {n} is out of range")
    try:
        header = json.loads(bytes(buf[8 : 8 + n]))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelDirError("model.safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise ModelDirError("model.safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    data_len = len(buf) - 8 - n
    for name, info in header.items():
        try:
            start, end = info["data_offsets"]
            dtype = info["dtype"]
            _ = info["shape"]
        except (KeyError, TypeError, ValueError):
            raise ModelDirError(f"model.safetensors entry {name!r} is malformed") from None
        if dtype not in _DTYPE_NAMES:
            raise ModelDirError(f"model.safetensors tensor {name!r} has unsupported dtype {dtype}")
        if not (0 <= start <= end <= data_len):
            raise ModelDirError(f"model.safetensors tensor {name!r} lies outside the file")
    return 8 + n, header


def _state_dict(buf: bytearray, dtype: Any) -> dict[str, Any]:
    import torch

    base, header = safetensors_index(buf)
    state: dict[str, Any] = {}
    for name, info in header.items():
        tdtype = getattr(torch, _DTYPE_NAMES[info["dtype"]])
        start, end = info["data_offsets"]
        shape = [int(d) for d in info["shape"]]
        itemsize = torch.empty((), dtype=tdtype).element_size()
        count = (end - start) // itemsize
        expected = 1
        for d in shape:
            expected *= d
        if count != expected:
            raise ModelDirError(
                f"model.safetensors tensor {name!r}: {end - start} bytes do not match shape {shape}"
            )
        if count == 0:
            tensor = torch.empty(shape, dtype=tdtype)
        else:
            tensor = torch.frombuffer(buf, dtype=tdtype, offset=base + start, count=count)
            tensor = tensor.view(shape)
        if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
            tensor = tensor.to(dtype)
        state[name] = tensor
    return state


def _tokenizer(files: Mapping[str, bytes | bytearray]) -> Any:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    options: dict[str, Any] = {}
    if "tokenizer_config.json" in files:
        try:
            raw = json.loads(bytes(files["tokenizer_config.json"]))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ModelDirError("tokenizer_config.json is not valid JSON") from None
        options = {k: v for k, v in raw.items() if k in _TOKENIZER_KEYS}
    if "chat_template.jinja" in files:
        options["chat_template"] = bytes(files["chat_template.jinja"]).decode("utf-8")
    try:
        backend = Tokenizer.from_str(bytes(files["tokenizer.json"]).decode("utf-8"))
    except Exception as exc:  # noqa: BLE001 (tokenizers raises plain Exception on bad JSON)
        raise ModelDirError(f"tokenizer.json could not be parsed ({type(exc).__name__})") from None
    return PreTrainedTokenizerFast(tokenizer_object=backend, **options)  # type: ignore[no-untyped-call]


def build_model(files: dict[str, bytearray], *, dtype: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from the files of an HF model directory held in memory. The weights
    buffer is consumed: the returned model's tensors live in it."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise ModelDirError(f"model files missing: {', '.join(missing)}")
    try:
        raw_config = json.loads(bytes(files["config.json"]))
        config_cls = CONFIG_MAPPING[raw_config["model_type"]]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise ModelDirError(
            "config.json is not valid JSON or names no model_type transformers knows"
        ) from None
    config = config_cls.from_dict(raw_config)
    model_cls: Any = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    if model_cls is None:
        raise ModelDirError(f"model_type {raw_config['model_type']!r} is not a causal LM")
    torch_dtype = None
    if dtype is not None:
        torch_dtype = getattr(torch, dtype, None)
        if not isinstance(torch_dtype, torch.dtype):
            raise ModelDirError(f"dtype {dtype!r} is not a torch dtype")
    tokenizer = _tokenizer(files)
    state = _state_dict(files.pop("model.safetensors"), torch_dtype)
    model, info = model_cls.from_pretrained(
        None,
        config=config,
        state_dict=state,
        dtype=torch_dtype or "auto",
        output_loading_info=True,
    )
    del state
    problems = {k: v for k, v in info.items() if v and k != "error_msgs"} | (
        {"error_msgs": info["error_msgs"]} if info.get("error_msgs") else {}
    )
    if problems:
        counts = ", ".join(f"{k}: {len(v)}" for k, v in problems.items())
        raise ModelDirError(
            f"the weights do not fit the model config ({counts}); the model directory is "
            "inconsistent"
        )
    if "generation_config.json" in files:
        from transformers import GenerationConfig

        try:
            generation = json.loads(bytes(files["generation_config.json"]))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ModelDirError("generation_config.json is not valid JSON") from None
        model.generation_config = GenerationConfig.from_dict(generation)
    model.eval()
    return model, tokenizer
