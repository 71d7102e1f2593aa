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

from inference._fastpath import FastLlama, supports
from inference._kvcache import SlotCache, SlotKVStore
from inference._prefix import BLOCK, PrefixCache
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
    """Prefill and decode over a dense batch of rows.

    On CPU, llama-family models run :class:`~inference._fastpath.FastLlama` (fewer, fused ops;
    the same mathematics); other models, and CUDA, run transformers' forward. With a
    ``prefix_cache_tokens`` budget, prompts that share a cached prefix prefill only the rest
    (:mod:`inference._prefix`); a joining group that shares a prefix prefills it once.
    """

    def __init__(
        self,
        model: Any,
        *,
        max_rows: int,
        pad_token_id: int,
        max_positions: int | None = None,
        prefix_cache_tokens: int = 0,
        fast: FastLlama | bool | None = True,
    ) -> None:
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
        positions = max_positions or int(getattr(config, "max_position_embeddings", 4096))
        if isinstance(fast, FastLlama):
            self.fast: FastLlama | None = fast
        elif fast and not self._cuda and supports(model):
            self.fast = FastLlama(model, max_positions=positions)
        else:
            self.fast = None
        self.prefix_cache = PrefixCache(prefix_cache_tokens if self.fast is not None else 0)

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
        if self.fast is not None:
            started = time.perf_counter()
            with torch.no_grad():  # not inference_mode: the store's buffers stay normal tensors
                logits = self._fast_prefill(self.fast, prompts)
            return logits, ForwardTiming(time.perf_counter() - started, None)
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

    def _shared_prefix(self, prompts: Sequence[Sequence[int]]) -> int:
        """Block-aligned length of the prefix every prompt shares, leaving each at least one
        token of its own to prefill (its logits give the first generated token)."""
        limit = min(len(p) for p in prompts) - 1
        first = prompts[0]
        common = limit
        for prompt in prompts[1:]:
            n = 0
            while n < common and prompt[n] == first[n]:
                n += 1
            common = n
        return common - common % BLOCK

    def _fast_prefill(self, fast: FastLlama, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        cache = self.prefix_cache
        device = self._device
        shared = self._shared_prefix(prompts) if cache.enabled else 0
        length, past = cache.lookup(prompts[0], shared)
        if len(prompts) > 1 and shared - length >= BLOCK:
            # the group shares more than is cached: prefill the shared part once, as one row
            part = list(prompts[0][length:shared])
            ids = torch.tensor([part], dtype=torch.long, device=device)
            positions = torch.arange(length, shared, device=device)[None]
            valid = torch.ones((1, shared), dtype=torch.bool, device=device)
            _, past = fast.prefill(ids, valid, positions, past)
            cache.insert(prompts[0][:shared], past)
            length = shared
        g = len(prompts)
        suffixes = [p[length:] for p in prompts]
        width = max(len(s) for s in suffixes)
        pads = [width - len(s) for s in suffixes]
        ids = torch.full((g, width), self._pad, dtype=torch.long)
        valid = torch.zeros((g, length + width), dtype=torch.bool)
        valid[:, :length] = True
        positions = torch.zeros((g, width), dtype=torch.long)
        for i, (suffix, pad) in enumerate(zip(suffixes, pads, strict=True)):
            ids[i, pad:] = torch.tensor(suffix, dtype=torch.long)
            valid[i, length + pad :] = True
            positions[i, pad:] = torch.arange(length, length + len(suffix))
        expanded = (
            None
            if past is None
            else [(k.expand(g, -1, -1, -1), v.expand(g, -1, -1, -1)) for k, v in past]
        )
        logits, layer_kv = fast.prefill(
            ids.to(device), valid.to(device), positions.to(device), expanded
        )
        if length and any(pads):
            # rows are [prefix][pad][suffix]; the store wants [pad][prefix][suffix]
            for k, v in layer_kv:
                for i, pad in enumerate(pads):
                    if pad:
                        k[i, :, : length + pad] = k[i, :, : length + pad].roll(pad, dims=-2)
                        v[i, :, : length + pad] = v[i, :, : length + pad].roll(pad, dims=-2)
        if g == 1 and cache.enabled:
            own = len(prompts[0]) - 1
            own -= own % BLOCK
            if own > length:
                cache.insert(prompts[0][:own], layer_kv)
        self.store.add_rows(layer_kv, pads)
        return logits

    def decode(self, last_tokens: Sequence[int]) -> tuple[torch.Tensor, ForwardTiming]:
        """One token for every row (``last_tokens`` in row order); return ``[rows, vocab]`` logits."""
        store = self.store
        store.ensure_end(store.end + 1)
        if self.fast is not None:
            started = time.perf_counter()
            tokens = torch.tensor(list(last_tokens), dtype=torch.long, device=self._device)
            with torch.no_grad():
                logits = self.fast.decode(tokens, store)
            store.end += 1
            return logits, ForwardTiming(time.perf_counter() - started, None)
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
