"""Prefix cache: keys/values of prompt prefixes, reused instead of prefilled again.

Most traffic through a gateway repeats a system prompt. An entry holds the keys/values
(``[1, H, length, D]`` per layer) of one token prefix; it is indexed at every ``BLOCK``-token
boundary by a chained hash, so a prompt finds the longest cached prefix it shares with any entry
in ``O(prompt length)``. A hash hit is confirmed by comparing the tokens themselves, so a hash
collision can never hand one request another prompt's keys.

Bounded: entries are evicted least recently used once their tokens exceed ``capacity_tokens``
(``batching.prefix_cache_tokens``; 0 disables the cache). RoPE is applied before keys are cached,
so a prefix's keys are valid at whatever KV-store column they are copied to.

Side channel: a cached prefix answers faster. A caller who can time the worker could learn that
some recent prompt began with a given text. The worker is reachable only by the gateway; an
operator who serves mutually distrusting tenants through one worker can set the capacity to 0.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["BLOCK", "PrefixCache"]

BLOCK = 16  # tokens per boundary; a prefix is reused in multiples of this


@dataclass(slots=True)
class _Entry:
    tokens: tuple[int, ...]
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per layer, [1, H, len(tokens), D]
    keys: list[int]  # boundary hashes indexing this entry


def _chain(tokens: Sequence[int], limit: int) -> list[int]:
    """Hash of ``tokens[:k * BLOCK]`` for k = 1 .. limit // BLOCK."""
    hashes: list[int] = []
    h = 0
    for start in range(0, limit - limit % BLOCK, BLOCK):
        h = hash((h, tuple(tokens[start : start + BLOCK])))
        hashes.append(h)
    return hashes


class PrefixCache:
    """LRU cache of prefix keys/values; see the module docstring. Scheduler thread only."""

    def __init__(self, capacity_tokens: int) -> None:
        self.capacity = capacity_tokens
        self._entries: OrderedDict[int, _Entry] = OrderedDict()  # by id, LRU order
        self._index: dict[int, tuple[int, int]] = {}  # boundary hash -> (entry id, length)
        self._tokens = 0
        self._next = 0
        self.hits = 0
        self.hit_tokens = 0

    @property
    def enabled(self) -> bool:
        return self.capacity >= BLOCK

    @property
    def tokens(self) -> int:
        return self._tokens

    def lookup(
        self, prompt: Sequence[int], limit: int
    ) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """The longest cached prefix of ``prompt`` of at most ``limit`` tokens (a multiple of
        ``BLOCK``): its length and per-layer keys/values ``[1, H, length, D]`` (views)."""
        if not self.enabled or limit < BLOCK:
            return 0, None
        hashes = _chain(prompt, limit)
        for k in range(len(hashes), 0, -1):
            found = self._index.get(hashes[k - 1])
            if found is None:
                continue
            entry_id, length = found
            entry = self._entries.get(entry_id)
            if entry is None or tuple(prompt[:length]) != entry.tokens[:length]:
                continue  # stale index or hash collision: never reuse unverified keys
            self._entries.move_to_end(entry_id)
            self.hits += 1
            self.hit_tokens += length
            return length, [(k_[:, :, :length], v[:, :, :length]) for k_, v in entry.kv]
        return 0, None

    def insert(
        self, tokens: Sequence[int], kv: Sequence[tuple[torch.Tensor, torch.Tensor]]
    ) -> None:
        """Cache ``tokens`` (a multiple of ``BLOCK`` long) with their keys/values ``[1, H, n, D]``
        (copied: the caller's tensors may be overwritten)."""
        n = len(tokens) - len(tokens) % BLOCK
        if not self.enabled or n < BLOCK or n > self.capacity:
            return
        hashes = _chain(tokens, n)
        last = self._index.get(hashes[-1])
        if last is not None and last[1] == n:
            entry = self._entries.get(last[0])
            if entry is not None and entry.tokens[:n] == tuple(tokens[:n]):
                self._entries.move_to_end(last[0])
                return  # already cached
        while self._entries and self._tokens + n > self.capacity:
            self._evict()
        entry_id = self._next
        self._next += 1
        copied = [(k[:, :, :n].clone(), v[:, :, :n].clone()) for k, v in kv]
        self._entries[entry_id] = _Entry(tuple(tokens[:n]), copied, hashes)
        self._tokens += n
        for k, h in enumerate(hashes, start=1):
            self._index[h] = (entry_id, k * BLOCK)

    def _evict(self) -> None:
        entry_id, entry = self._entries.popitem(last=False)
        self._tokens -= len(entry.tokens)
        for h in entry.keys:
            if self._index.get(h, (None,))[0] == entry_id:
                del self._index[h]

    def clear(self) -> None:
        self._entries.clear()
        self._index.clear()
        self._tokens = 0
