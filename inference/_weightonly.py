"""Weight-only int8 / int4 linear maps on CPU (torch's packed kernels); see inference.quantize.

Kept apart from :mod:`inference.quantize` so the CLI can register ``quantize`` without importing
torch. Measured on this host (2 cores, AVX512-BF16/AMX), batch 16, one thread, in the model:
bfloat16 activations only (the same kernels with float32 activations were ~20x slower).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["INT4_GROUP", "WeightOnlyLinear", "quantize_model", "quantized_linear"]

INT4_GROUP = 32  # input channels per int4 scale/zero point

Linear = Callable[[torch.Tensor], torch.Tensor]


def _int8(weight: torch.Tensor, dtype: torch.dtype) -> tuple[Linear, int]:
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
    scales = scale.to(dtype).contiguous()

    def linear(x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out: torch.Tensor = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, shape[-1]), q, scales)
        return out.reshape(*shape[:-1], q.shape[0])

    return linear, q.numel() + 4 * q.shape[0]


def _int4(weight: torch.Tensor, dtype: torch.dtype, group: int = INT4_GROUP) -> tuple[Linear, int]:
    w = weight.detach().float()
    n, k = w.shape
    padded = -(-n // 16) * 16  # the packing wants N in multiples of 16: zero rows, sliced off
    if padded != n:
        w = torch.cat([w, w.new_zeros(padded - n, k)])
    if k % group:
        raise ValueError(f"input size {k} is not a multiple of the int4 group size {group}")
    grouped = w.reshape(padded, k // group, group)
    low = grouped.amin(-1, keepdim=True)
    high = grouped.amax(-1, keepdim=True)
    scale = ((high - low) / 15.0).clamp(min=1e-12)
    q = torch.round((grouped - low) / scale).clamp(0, 15).to(torch.int32).reshape(padded, k)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    # the kernel computes (q - 8) * scale + zero, so zero = low + 8 * scale
    scales_zeros = (
        torch.stack([scale.squeeze(-1), (low + 8 * scale).squeeze(-1)], dim=-1)
        .transpose(0, 1)
        .contiguous()
        .to(dtype)
    )

    def linear(x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out: torch.Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.reshape(-1, shape[-1]), packed, group, scales_zeros
        )
        if padded != n:
            out = out[..., :n]
        return out.reshape(*shape[:-1], n)

    return linear, padded * k // 2 + scales_zeros.numel() * scales_zeros.element_size()


def quantized_linear(weight: torch.Tensor, method: str, dtype: torch.dtype) -> Linear:
    """``weight`` ``[N, K]`` as a weight-only quantized linear map computing in ``dtype``."""
    if method == "int8":
        return _int8(weight, dtype)[0]
    if method == "int4":
        return _int4(weight, dtype)[0]
    raise ValueError(f"unknown weight-only method {method!r}")


class WeightOnlyLinear(torch.nn.Module):
    """An ``nn.Linear`` replacement holding a quantized weight (transformers' forward path)."""

    def __init__(self, linear: torch.nn.Linear, method: str, dtype: torch.dtype) -> None:
        super().__init__()
        builder = _int8 if method == "int8" else _int4
        self._linear, self.weight_bytes = builder(linear.weight, dtype)
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._linear(x)
        return out if self.bias is None else out + self.bias


def quantize_model(model: Any, method: str, *, dtype: torch.dtype = torch.bfloat16) -> Any:
    """``model`` (in place) with every ``nn.Linear`` as :class:`WeightOnlyLinear` and the rest in
    ``dtype``; ``bf16`` only casts. The embedding lookup stays in ``dtype``."""
    model = model.to(dtype)
    if method == "bf16":
        return model.eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(parent, name, WeightOnlyLinear(child, method, dtype))
    return model.eval()
