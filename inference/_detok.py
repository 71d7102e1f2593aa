"""Token ids → text deltas for streaming, with stop strings.

Text is re-decoded from all generated ids (byte-level BPE pieces only become valid UTF-8 in
groups), so a delta is emitted only once it is stable: no trailing U+FFFD (an incomplete
character), and no tail that could still grow into a stop string. When a stop string appears,
the text is cut before it and the sequence ends.
"""

from __future__ import annotations

from typing import Any

__all__ = ["TextAssembler"]

_REPLACEMENT = "\ufffd"


class TextAssembler:
    """Accumulates one sequence's tokens and hands out safe-to-send text."""

    __slots__ = ("_emitted", "_ids", "_stop", "_tokenizer", "stopped")

    def __init__(self, tokenizer: Any, stop: tuple[str, ...]) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(s for s in stop if s)
        self._ids: list[int] = []
        self._emitted = 0
        self.stopped = False

    def _text(self) -> str:
        text: str = self._tokenizer.decode(
            self._ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        return text

    def push(self, token_id: int) -> str:
        """Add a generated token; return the new text that is safe to send (may be empty)."""
        self._ids.append(token_id)
        text = self._text()
        for stop in self._stop:
            cut = text.find(stop, max(0, self._emitted - len(stop)))
            if cut != -1:
                self.stopped = True
                text = text[: max(cut, self._emitted)]
                delta = text[self._emitted :]
                self._emitted = len(text)
                return delta
        safe = len(text)
        if text.endswith(_REPLACEMENT):
            safe = len(text.rstrip(_REPLACEMENT))
        safe = min(safe, len(text) - self._held_for_stop(text))
        if safe <= self._emitted:
            return ""
        delta = text[self._emitted : safe]
        self._emitted = safe
        return delta

    def _held_for_stop(self, text: str) -> int:
        """Length of the longest tail of ``text`` that is a proper prefix of a stop string."""
        held = 0
        for stop in self._stop:
            for n in range(min(len(stop) - 1, len(text)), held, -1):
                if text.endswith(stop[:n]):
                    held = n
                    break
        return held

    def flush(self) -> str:
        """The sequence ended without a stop string: send whatever was held back."""
        if self.stopped:
            return ""
        text = self._text()
        delta = text[self._emitted :]
        self._emitted = len(text)
        return delta
