"""Slot KV cache: one preallocated key/value buffer per layer shared by the running batch.

Layout per layer: ``[rows, kv_heads, columns, head_dim]``. Row ``i`` holds the i-th running
sequence; all rows share the column ``end`` where the next token is written, so one decode step
writes one column for the whole batch (no ``torch.cat`` of the whole cache per step, which is
what ``DynamicCache`` does and what dominates decode time at batch 16). Each row's tokens sit
right-aligned in ``[start_i, end)``; columns left of ``start_i`` are masked out.

- A joining group is prefilled on its own (left-padded, ``DynamicCache``) and its keys/values
  are copied into fresh rows ending at ``end`` (shifting the batch right when the new prompt is
  longer than anything running).
- A leaving row is replaced by the last row (one row copy), keeping rows ``[0, n)`` dense so a
  decode step never computes on empty slots.
- When ``end`` reaches the buffer, the batch is compacted left by the smallest start; the buffer
  grows (doubling) only when the longest running sequence needs it, so its size stays within
  ``rows x 2 x max_total_tokens`` tokens.

RoPE is applied before keys are cached, so moving a key to another column does not change it:
positions travel in ``position_ids``, not in column indices.

The HF side (:class:`SlotCache`) implements just the :class:`transformers.Cache` surface the
decoder layers and the mask builder call: ``update``, ``get_seq_length``, ``get_mask_sizes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

__all__ = ["SlotCache", "SlotKVStore"]

_COLUMN_ALIGN = 64


def _round_up(value: int, align: int = _COLUMN_ALIGN) -> int:
    return -(-value // align) * align


class SlotKVStore:
    """The buffers and the bookkeeping of which columns each row uses."""

    def __init__(
        self,
        *,
        num_layers: int,
        kv_heads: int,
        head_dim: int,
        max_rows: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.num_layers = num_layers
        self._shape = (max_rows, kv_heads, 0, head_dim)
        self._dtype = dtype
        self._device = device
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.starts: list[int] = []  # per row, first valid column
        self.end = 0  # next column to write, shared by every row
        self.columns = 0

    @property
    def rows(self) -> int:
        return len(self.starts)

    @property
    def lo(self) -> int:
        """First column any running row uses (attention looks at ``[lo, end)``)."""
        return min(self.starts) if self.starts else self.end

    @property
    def max_rows(self) -> int:
        return self._shape[0]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    # -- columns ------------------------------------------------------------------------

    def _allocate(self, columns: int) -> None:
        rows, heads, _, dim = self._shape
        new_keys = []
        new_values = []
        for i in range(self.num_layers):
            # zeros, not empty: masked columns are multiplied by a zero weight, and 0 * NaN
            # from uninitialised memory would poison the row.
            k = torch.zeros((rows, heads, columns, dim), dtype=self._dtype, device=self._device)
            v = torch.zeros_like(k)
            if self.keys and self.rows:
                lo, end = self.lo, self.end
                k[: self.rows, :, lo:end] = self.keys[i][: self.rows, :, lo:end]
                v[: self.rows, :, lo:end] = self.values[i][: self.rows, :, lo:end]
            new_keys.append(k)
            new_values.append(v)
        self.keys, self.values = new_keys, new_values
        self.columns = columns

    def _shift(self, delta: int) -> None:
        """Move every row's columns by ``delta`` (negative: left)."""
        if delta == 0 or not self.rows:
            self.end += delta
            return
        lo, end, n = self.lo, self.end, self.rows
        for t in self.keys + self.values:
            t[:n, :, lo + delta : end + delta] = t[:n, :, lo:end].clone()
        self.starts = [s + delta for s in self.starts]
        self.end += delta

    def ensure_end(self, needed_end: int) -> None:
        """Make columns up to ``needed_end`` writable; compaction may move ``end`` left."""
        if needed_end <= self.columns:
            return
        span = needed_end - self.lo
        if self.lo > 0:
            self._shift(-self.lo)
            if span <= self.columns - self.columns // 4:
                return
        self._allocate(_round_up(max(2 * span, _COLUMN_ALIGN)))

    # -- rows ---------------------------------------------------------------------------

    def add_rows(
        self, layer_kv: Sequence[tuple[torch.Tensor, torch.Tensor]], pads: Sequence[int]
    ) -> None:
        """Append a prefilled, left-padded group: ``layer_kv[i]`` is ``[g, H, P, D]`` keys/values."""
        group = len(pads)
        width = int(layer_kv[0][0].shape[-2])
        if self.rows + group > self.max_rows:
            raise RuntimeError("more rows than the KV store holds")  # scheduler bounds this
        if not self.rows:
            self.starts = []
            self.end = 0
        if self.end < width:
            self.ensure_end(width)
            self._shift(width - self.end)
        first, n = self.end - width, self.rows
        for i, (k, v) in enumerate(layer_kv):
            self.keys[i][n : n + group, :, first : self.end] = k
            self.values[i][n : n + group, :, first : self.end] = v
        self.starts.extend(first + pad for pad in pads)

    def remove_rows(self, rows: Sequence[int]) -> None:
        """Drop ``rows``, highest first; each hole is filled by the then-last row."""
        lo, end = self.lo, self.end
        for row in sorted(set(rows), reverse=True):
            last = self.rows - 1
            if row != last:
                for t in self.keys + self.values:
                    t[row, :, lo:end] = t[last, :, lo:end]
                self.starts[row] = self.starts[last]
            self.starts.pop()
        if not self.starts:
            self.end = 0

    def decode_mask(self) -> torch.Tensor:
        """2D attention mask ``[rows, end + 1 - lo]`` for a one-token decode step."""
        lo = self.lo
        columns = torch.arange(lo, self.end + 1, device=self._device)
        starts = torch.tensor(self.starts, device=self._device)
        return (columns[None, :] >= starts[:, None]).to(torch.long)

    def decode_positions(self) -> torch.Tensor:
        return torch.tensor([[self.end - s] for s in self.starts], device=self._device)


class _SlotLayer(CacheLayerMixin):  # type: ignore[no-untyped-call]
    is_sliding = False
    is_compileable = False

    def __init__(self, store: SlotKVStore, index: int) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._store = store
        self._index = index
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        return None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        s = self._store
        n, end, q = s.rows, s.end, int(key_states.shape[-2])
        keys, values = s.keys[self._index], s.values[self._index]
        keys[:n, :, end : end + q] = key_states
        values[:n, :, end : end + q] = value_states
        lo = s.lo
        return keys[:n, :, lo : end + q], values[:n, :, lo : end + q]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        s = self._store
        return s.end - s.lo + query_length, 0

    def get_seq_length(self) -> int:
        s = self._store
        return s.end - s.lo

    def get_max_length(self) -> int:
        return -1


class SlotCache(Cache):
    """A transformers ``Cache`` view onto a :class:`SlotKVStore` for one decode step."""

    def __init__(self, store: SlotKVStore) -> None:
        super().__init__(layers=[_SlotLayer(store, i) for i in range(store.num_layers)])
