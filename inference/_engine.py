"""The batched forward passes: prefill a joining group, decode one token for every running row.

The engine owns the model and the :class:`~inference._kvcache.SlotKVStore`; it knows rows, not
requests (the scheduler maps one to the other). It runs only on the scheduler thread.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from inference._kvcache import SlotCache, SlotKVStore
from inference.errors import ModelLoadError

__all__ = ["BatchEngine", "ForwardTiming"]


@dataclass(frozen=True, slots=True)
class ForwardTiming:
    """Wall seconds of one forward pass and, on CUDA, the kernel time measured by CUDA events."""

    seconds: float
    cuda_seconds: float | None


def _cache_kwarg(model: Any) -> str:
    # transformers renamed `past_key_values` to `cache` (5.24, old name deprecated); accept both.
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _check_supported(config: Any) -> None:
    layer_types = getattr(config, "layer_types", None) or ()
    odd = sorted({t for t in layer_types if t != "full_attention"})
    if odd or getattr(config, "is_encoder_decoder", False):
        raise ModelLoadError(
            f"model type {getattr(config, 'model_type', '?')!r} uses {odd or 'encoder-decoder'} "
            "layers; the worker's slot KV cache serves decoder-only full-attention models"
        )


class BatchEngine:
    """Prefill and decode over a dense batch of rows."""

    def __init__(self, model: Any, *, max_rows: int, pad_token_id: int) -> None:
        config = model.config.get_text_config(decoder=True)
        _check_supported(config)
        self._model = model
        self._device: torch.device = next(model.parameters()).device
        self._pad = pad_token_id
        self._cache_kwarg = _cache_kwarg(model)
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
        self.store = SlotKVStore(
            num_layers=config.num_hidden_layers,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            max_rows=max_rows,
            dtype=dtype,
            device=self._device,
        )
        self._cuda = self._device.type == "cuda"

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def rows(self) -> int:
        return self.store.rows

    def _timed_forward(self, **kwargs: Any) -> tuple[torch.Tensor, ForwardTiming]:
        started = time.perf_counter()
        events = None
        if self._cuda:
            events = (
                torch.cuda.Event(enable_timing=True),  # type: ignore[no-untyped-call]
                torch.cuda.Event(enable_timing=True),  # type: ignore[no-untyped-call]
            )
            events[0].record()
        with torch.inference_mode():
            out = self._model(use_cache=True, logits_to_keep=1, **kwargs)
        cuda_seconds = None
        if events is not None:
            events[1].record()
            events[1].synchronize()
            cuda_seconds = events[0].elapsed_time(events[1]) / 1000.0
        logits = out.logits[:, -1, :].float().cpu()
        return logits, ForwardTiming(time.perf_counter() - started, cuda_seconds)

    def prefill(self, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, ForwardTiming]:
        """Run the prompts as one left-padded batch; append them as rows; return last logits."""
        width = max(len(p) for p in prompts)
        pads = [width - len(p) for p in prompts]
        ids = torch.full((len(prompts), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, (prompt, pad) in enumerate(zip(prompts, pads, strict=True)):
            ids[i, pad:] = torch.tensor(prompt, dtype=torch.long)
            mask[i, pad:] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits, timing = self._timed_forward(
            input_ids=ids.to(self._device),
            attention_mask=mask.to(self._device),
            position_ids=positions.to(self._device),
            **{self._cache_kwarg: cache},
        )
        layer_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        for layer in cache.layers:
            keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
            if not isinstance(keys, torch.Tensor) or not isinstance(values, torch.Tensor):
                raise ModelLoadError("the model's prefill produced no key/value cache")
            layer_kv.append((keys, values))
        self.store.add_rows(layer_kv, pads)
        return logits, timing

    def decode(self, last_tokens: Sequence[int]) -> tuple[torch.Tensor, ForwardTiming]:
        """One token for every row (``last_tokens`` in row order); return ``[rows, vocab]`` logits."""
        store = self.store
        store.ensure_end(store.end + 1)
        ids = torch.tensor(list(last_tokens), dtype=torch.long, device=self._device)[:, None]
        logits, timing = self._timed_forward(
            input_ids=ids,
            attention_mask=store.decode_mask(),
            position_ids=store.decode_positions(),
            **{self._cache_kwarg: SlotCache(store)},
        )
        store.end += 1
        return logits, timing

    def remove(self, rows: Sequence[int]) -> None:
        """Free ``rows``, highest first, each hole filled by the then-last row (callers mirror
        this on their own row lists)."""
        self.store.remove_rows(rows)
