"""Load the served model from its configured source, then apply the runtime levers.

``encrypted`` goes through :mod:`inference.artifact` (data key unwrapped in the HSM, weights
decrypted into memory); ``dir`` loads a plaintext HF directory through the same in-memory
build (development). Then: attention implementation, quantization, device. Blocking: run it
off the event loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch

from inference.config import ModelSourceKind, Quantization, WorkerConfig
from inference.errors import ModelLoadError

__all__ = ["ServedModel", "eos_token_ids", "load_served_model"]


@dataclass(frozen=True, slots=True)
class ServedModel:
    """A model ready to serve: weights on ``device``, tokenizer, served name, load seconds."""

    model: Any = field(repr=False)
    tokenizer: Any = field(repr=False)
    name: str
    device: torch.device
    load_seconds: float
    # the CPU fast path, built here when quantization shapes its weights (else by the engine)
    fast: Any = field(default=None, repr=False)


def eos_token_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """Every token id that ends a sequence (tokenizer EOS and the generation config's)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, list | tuple):
        ids.update(int(i) for i in configured)
    if not ids:
        raise ModelLoadError("the model's tokenizer defines no end-of-sequence token")
    return frozenset(ids)


def _read(config: WorkerConfig) -> Any:
    from inference.artifact import load_encrypted_model, load_model_dir

    source = config.model
    dtype = config.runtime.dtype.value
    if source.source is ModelSourceKind.ENCRYPTED:
        from pki.hsm import HsmSession

        if source.hsm is None:  # refused by ModelConfig; kept for the type checker
            raise ModelLoadError("source 'encrypted' needs an 'hsm' section")
        with HsmSession(source.hsm.resolve()) as hsm:
            return load_encrypted_model(
                source.path, hsm, expected_model_id=source.name, dtype=dtype
            )
    if not source.path.is_dir():
        raise ModelLoadError(f"model directory {source.path} does not exist; check model.path")
    return load_model_dir(source.path, model_id=source.name, dtype=dtype)


def _to_nf4(model: Any, dtype: torch.dtype) -> Any:  # pragma: no cover - CUDA + bitsandbytes
    import bitsandbytes as bnb  # type: ignore[import-not-found]

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and name != "lm_head":
                layer = bnb.nn.Linear4bit(
                    child.in_features,
                    child.out_features,
                    bias=child.bias is not None,
                    compute_dtype=dtype,
                    quant_type="nf4",
                )
                layer.weight = bnb.nn.Params4bit(
                    child.weight.data, requires_grad=False, quant_type="nf4"
                )
                if child.bias is not None:
                    layer.bias = child.bias
                setattr(parent, name, layer)
    return model


def load_served_model(config: WorkerConfig, device: str) -> ServedModel:
    """Read, configure and place the model; ``device`` comes from :func:`check_runtime`."""
    from inference._fastpath import FastLlama, supports
    from inference._weightonly import quantize_model, quantized_linear

    started = time.perf_counter()
    loaded = _read(config)
    model = loaded.model
    runtime = config.runtime
    try:
        model.set_attn_implementation(runtime.attn_implementation.value)
    except (ValueError, ImportError) as exc:
        raise ModelLoadError(
            f"attention implementation {runtime.attn_implementation.value!r} is not available "
            f"for this model: {exc}"
        ) from None
    fast = None
    if runtime.quantization in (Quantization.INT8, Quantization.INT4):
        method, dtype = runtime.quantization.value, getattr(torch, runtime.dtype.value)
        if supports(model):
            fast = FastLlama(
                model,
                max_positions=config.batching.max_total_tokens + 1,
                make_linear=lambda w: quantized_linear(w, method, dtype),
            )
        else:
            model = quantize_model(model, method, dtype=dtype)
    elif runtime.quantization is Quantization.NF4:
        model = _to_nf4(model, getattr(torch, runtime.dtype.value))
    model = model.to(torch.device(device)).eval()
    name = config.model.name or loaded.model_id
    return ServedModel(
        model=model,
        tokenizer=loaded.tokenizer,
        name=name,
        device=torch.device(device),
        load_seconds=time.perf_counter() - started,
        fast=fast,
    )
