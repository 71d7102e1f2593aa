"""Choosing the next token, per row: greedy, or temperature + nucleus (top-p) sampling.

Each sampled request owns a ``torch.Generator`` seeded from its ``seed`` (or from the OS when it
gives none), so a seeded request draws the same tokens whatever else shares its batch.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import torch

__all__ = ["Sampler", "SamplingParams"]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """What one request asked for. ``temperature == 0`` means greedy."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # vLLM extension: end-of-sequence tokens do not end the sequence
    min_tokens: int = 0  # vLLM extension: no end-of-sequence token before this many tokens

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


class Sampler:
    """Per-request sampling state (the generator)."""

    __slots__ = ("_generator", "params")

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self._generator: torch.Generator | None = None
        if not params.greedy:
            self._generator = torch.Generator(device="cpu")
            seed = params.seed if params.seed is not None else secrets.randbits(63)
            self._generator.manual_seed(seed)

    def sample(self, logits: torch.Tensor, greedy_choice: int) -> int:
        """Pick from one row of float32 CPU logits; ``greedy_choice`` is its argmax."""
        if self._generator is None:
            return greedy_choice
        probs = torch.softmax(logits / self.params.temperature, dim=-1)
        if self.params.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            # Keep the smallest prefix whose mass reaches top_p (the top token always stays).
            outside = (sorted_probs.cumsum(-1) - sorted_probs) >= self.params.top_p
            sorted_probs = sorted_probs.masked_fill(outside, 0.0)
            pick = torch.multinomial(sorted_probs, 1, generator=self._generator)
            return int(order[pick].item())
        return int(torch.multinomial(probs, 1, generator=self._generator).item())
