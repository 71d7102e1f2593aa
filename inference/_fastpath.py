"""A lean forward pass for llama-family decoders, written for the slot KV cache.

Why: at batch 16 on a small model, transformers' module forward spends a large share of each
decode step in per-layer Python and small tensor ops (separate q/k/v and gate/up matmuls, a
``Cache`` object per layer, mask building, dtype round trips). This forward does the same
mathematics with fewer, larger ops:

- q, k and v are one matmul (their weights concatenated), gate and up one more;
- RoPE cos/sin come from a table built once (same float32 formula as transformers), applied to
  q and k together;
- keys and values are written straight into the :class:`~inference._kvcache.SlotKVStore`
  column, and attention reads ``[lo, end]`` with one boolean mask shared by all layers;
- only the last position goes through the vocabulary projection.

The weights are those of the loaded model (concatenated copies of q/k/v and gate/up, the rest
shared), so float32 stays the exact reference path: outputs equal transformers' up to float
rounding of the fused matmuls (tests compare greedy tokens with transformers' own generate).
Weight-only int8/int4 (:mod:`inference.quantize`) plugs in as another ``linear`` callable.

Only configs this forward reproduces exactly are accepted (:func:`supports`); anything else
(other RoPE scalings, biases, sliding windows, non-SiLU MLPs) runs transformers' forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from inference._kvcache import SlotKVStore

__all__ = ["FastLlama", "Linear", "dense", "packed", "supports"]

# A linear map x[..., K] -> [..., N] (dense weight, or a packed quantized one).
Linear = Callable[[torch.Tensor], torch.Tensor]

_MODEL_TYPES = frozenset({"llama"})


def dense(weight: torch.Tensor) -> Linear:
    w = weight.detach().contiguous()

    def linear(x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, w)

    linear.weight = w  # type: ignore[attr-defined]  # for byte counts and tests
    return linear


def _mkldnn_bf16() -> bool:
    try:
        return bool(
            torch.backends.mkldnn.is_available()  # type: ignore[no-untyped-call]
            and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
    except (AttributeError, RuntimeError):
        return False


def packed(weight: torch.Tensor) -> Linear:
    """bfloat16 weights prepacked for oneDNN (AMX/AVX512-BF16 blocked layout, what inductor's
    freezing does): ~1.4x faster than ``F.linear`` at batch 16 on this CPU. Other dtypes, or a
    CPU without bf16 kernels: :func:`dense` (float32 stays bit-for-bit transformers' matmul)."""
    if weight.dtype is not torch.bfloat16 or weight.device.type != "cpu" or not _mkldnn_bf16():
        return dense(weight)
    w = weight.detach().contiguous()
    pw = torch.ops.mkldnn._reorder_linear_weight(w, 16)

    def linear(x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = torch.ops.mkldnn._linear_pointwise(x, pw, None, "none", [], "")
        return out

    linear.weight = w  # type: ignore[attr-defined]
    return linear


def supports(model: Any) -> bool:
    """True when :class:`FastLlama` computes exactly what ``model``'s own forward computes."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in _MODEL_TYPES:
        return False
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        return False
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return False
    if getattr(config, "hidden_act", "silu") != "silu":
        return False
    if getattr(config, "pretraining_tp", 1) != 1:
        return False
    inner = getattr(model, "model", None)
    return inner is not None and hasattr(inner, "layers") and hasattr(model, "lm_head")


class _Layer:
    __slots__ = ("down", "gate_up", "input_norm", "o", "post_norm", "qkv")

    def __init__(self, qkv: Linear, o: Linear, gate_up: Linear, down: Linear, norms: Any) -> None:
        self.qkv, self.o, self.gate_up, self.down = qkv, o, gate_up, down
        self.input_norm, self.post_norm = norms


class FastLlama:
    """Prefill and decode for a supported llama model; see the module docstring."""

    def __init__(
        self,
        model: Any,
        *,
        max_positions: int,
        make_linear: Callable[[torch.Tensor], Linear] = packed,
    ) -> None:
        config = model.config
        self.hidden = int(config.hidden_size)
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(getattr(config, "num_key_value_heads", None) or self.heads)
        self.head_dim = int(getattr(config, "head_dim", None) or self.hidden // self.heads)
        self.eps = float(config.rms_norm_eps)
        inner = model.model
        self.embed: torch.Tensor = inner.embed_tokens.weight.detach()
        self.dtype = self.embed.dtype
        self.final_norm: torch.Tensor = inner.norm.weight.detach()
        self.lm_head = make_linear(model.lm_head.weight)
        self.layers: list[_Layer] = []
        for layer in inner.layers:
            attn, mlp = layer.self_attn, layer.mlp
            qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
            gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
            self.layers.append(
                _Layer(
                    make_linear(qkv.detach()),
                    make_linear(attn.o_proj.weight),
                    make_linear(gate_up.detach()),
                    make_linear(mlp.down_proj.weight),
                    (
                        layer.input_layernorm.weight.detach(),
                        layer.post_attention_layernorm.weight.detach(),
                    ),
                )
            )
        # RoPE table, transformers' formula: freqs = position.float() * inv_freq (float32).
        rope = getattr(config, "rope_parameters", None) or {}
        theta = float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
        inv_freq = 1.0 / (
            theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.int64).float() / self.head_dim)
        )
        rotary = getattr(inner, "rotary_emb", None)
        if rotary is not None and isinstance(getattr(rotary, "inv_freq", None), torch.Tensor):
            inv_freq = rotary.inv_freq.detach().float().cpu()
        positions = torch.arange(max_positions, dtype=torch.int64).float()
        freqs = positions[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        device = self.embed.device
        self.cos = emb.cos().to(self.dtype).to(device)
        self.sin = emb.sin().to(self.dtype).to(device)
        self.scale = self.head_dim**-0.5

    # -- pieces ----------------------------------------------------------------------------

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # transformers' LlamaRMSNorm: float32 statistics, cast back, then the weight.
        h = x.to(torch.float32)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * h.to(x.dtype)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return (x * cos) + (rotated * sin)

    def _attend_layer(
        self,
        layer: _Layer,
        h: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        write: Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        index: int,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        b, t, _ = h.shape
        nq, nkv, d = self.heads, self.kv_heads, self.head_dim
        qkv = layer.qkv(self._norm(h, layer.input_norm))
        qk = qkv[..., : (nq + nkv) * d].view(b, t, nq + nkv, d).transpose(1, 2)
        qk = self._rope(qk, cos, sin)
        q, k = qk[:, :nq], qk[:, nq:]
        v = qkv[..., (nq + nkv) * d :].view(b, t, nkv, d).transpose(1, 2)
        keys, values = write(index, k, v)
        out = F.scaled_dot_product_attention(
            q, keys, values, attn_mask=mask, scale=self.scale, enable_gqa=nq != nkv
        )
        h = h + layer.o(out.transpose(1, 2).reshape(b, t, nq * d))
        x = self._norm(h, layer.post_norm)
        gate, up = layer.gate_up(x).chunk(2, dim=-1)
        return h + layer.down(F.silu(gate) * up)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        last = self._norm(h[:, -1, :], self.final_norm)
        return self.lm_head(last).float()

    # -- passes ----------------------------------------------------------------------------

    def prefill(
        self,
        ids: torch.Tensor,
        key_valid: torch.Tensor,
        positions: torch.Tensor,
        past: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """``ids``/``positions`` ``[g, P]``; ``key_valid`` ``[g, L + P]`` (False: padding) where
        ``L`` is the length of ``past`` (keys/values ``[g, H, L, D]`` per layer, every row valid).
        Returns last-position logits ``[g, vocab]`` (float32) and per-layer keys/values
        ``[g, H, L + P, D]``; padded columns hold finite values that no valid query attends."""
        p = int(ids.shape[1])
        past_len = 0 if past is None else int(past[0][0].shape[-2])
        h = F.embedding(ids, self.embed)
        cos, sin = self.cos[positions][:, None], self.sin[positions][:, None]
        cols = torch.arange(past_len + p, device=ids.device)
        query_cols = cols[past_len:]
        causal = cols[None, :] <= query_cols[:, None]  # [P, L+P]
        mask = causal[None] & key_valid[:, None, :]
        mask = mask | (cols[None, None, :] == query_cols[None, :, None])  # pads see themselves
        mask = mask[:, None]  # [g, 1, P, L+P]
        kv: list[tuple[torch.Tensor, torch.Tensor]] = []

        def write(
            index: int, k: torch.Tensor, v: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            if past is not None:
                pk, pv = past[index]
                k, v = torch.cat((pk, k), dim=-2), torch.cat((pv, v), dim=-2)
            kv.append((k, v))
            return k, v

        for index, layer in enumerate(self.layers):
            h = self._attend_layer(layer, h, cos, sin, write, index, mask)
        return self._logits(h), kv

    def decode(self, ids: torch.Tensor, store: SlotKVStore) -> torch.Tensor:
        """One token per running row of ``store`` (its ``end`` column must be writable)."""
        n, end, lo = store.rows, store.end, store.lo
        positions = torch.tensor([end - s for s in store.starts], device=ids.device)
        cos, sin = self.cos[positions][:, None, None], self.sin[positions][:, None, None]
        starts = torch.tensor(store.starts, device=ids.device)
        columns = torch.arange(lo, end + 1, device=ids.device)
        mask = (columns[None, :] >= starts[:, None])[:, None, None, :]  # [n, 1, 1, cols]
        h = F.embedding(ids[:, None], self.embed)
        keys_all, values_all = store.keys, store.values

        def write(
            index: int, k: torch.Tensor, v: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            keys, values = keys_all[index], values_all[index]
            keys[:n, :, end : end + 1] = k
            values[:n, :, end : end + 1] = v
            return keys[:n, :, lo : end + 1], values[:n, :, lo : end + 1]

        for index, layer in enumerate(self.layers):
            h = self._attend_layer(layer, h, cos, sin, write, index, mask)
        return self._logits(h)
