"""Put originals back where an answer carries placeholders: whole texts, response bodies and SSE
streams where a placeholder may be split over chunks.

Only placeholders of this request's :class:`PseudonymMap` are replaced (in any case); other text,
including look-alikes, is left alone. Inside tool-call arguments (JSON) the original is inserted
JSON-escaped so the arguments stay valid JSON.

``StreamRestorer`` holds back only the tail of the stream that could still become a placeholder
(at most one placeholder's length), never the answer.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

from gateway.sanitize.pseudonyms import PseudonymMap

__all__ = [
    "PseudonymRestorer",
    "SSERestorer",
    "StreamRestorer",
    "restore_response_body",
    "restore_text",
]


def _pattern(pseudonyms: PseudonymMap) -> re.Pattern[str] | None:
    placeholders = sorted(pseudonyms.placeholders(), key=len, reverse=True)
    if not placeholders:
        return None
    return re.compile("|".join(re.escape(p) for p in placeholders), re.IGNORECASE)


def _restorer(pseudonyms: PseudonymMap, *, json_escape: bool) -> Any:
    def original(m: re.Match[str]) -> str:
        value = pseudonyms.original_for(m.group())
        if value is None:  # pragma: no cover - the pattern only holds known placeholders
            return m.group()
        return json.dumps(value, ensure_ascii=False)[1:-1] if json_escape else value

    return original


def restore_text(text: str, pseudonyms: PseudonymMap, *, json_escape: bool = False) -> str:
    """``text`` with every placeholder of ``pseudonyms`` replaced by its original."""
    pattern = _pattern(pseudonyms)
    if pattern is None or not text:
        return text
    return pattern.sub(_restorer(pseudonyms, json_escape=json_escape), text)


class StreamRestorer:
    """Restore placeholders in a text that arrives in chunks."""

    def __init__(self, pseudonyms: PseudonymMap, *, json_escape: bool = False) -> None:
        self._pseudonyms = pseudonyms
        self._json_escape = json_escape
        self._pattern = _pattern(pseudonyms)
        lowered = [p.lower() for p in pseudonyms.placeholders()]
        self._prefixes = {p[:k] for p in lowered for k in range(1, len(p))}
        self._longest = max((len(p) for p in lowered), default=0)
        self._buffer = ""

    def feed(self, chunk: str) -> str:
        """Text that is safe to send now (restored); a possible partial placeholder is held."""
        if self._pattern is None:
            return chunk
        self._buffer += chunk
        buffer = self._buffer
        cut = len(buffer)
        low = buffer[-self._longest :].lower() if self._longest else ""
        for k in range(min(len(low), self._longest - 1), 0, -1):
            if low[-k:] in self._prefixes:
                cut = len(buffer) - k
                break
        # Never cut inside a complete placeholder.
        for m in self._pattern.finditer(buffer, max(0, cut - self._longest)):
            if m.start() < cut < m.end():
                cut = m.end()
        ready, self._buffer = buffer[:cut], buffer[cut:]
        return restore_text(ready, self._pseudonyms, json_escape=self._json_escape)

    def flush(self) -> str:
        """Whatever is held back, restored (call at the end of the stream)."""
        rest, self._buffer = self._buffer, ""
        return restore_text(rest, self._pseudonyms, json_escape=self._json_escape)

    @property
    def pending(self) -> int:
        """How many characters are held back."""
        return len(self._buffer)


def restore_response_body(body: Mapping[str, Any], pseudonyms: PseudonymMap) -> dict[str, Any]:
    """A deep copy of a chat/completions or completions response with originals restored."""
    result: dict[str, Any] = copy.deepcopy(dict(body))
    if not pseudonyms:
        return result
    for choice in result.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        if isinstance(choice.get("text"), str):
            choice["text"] = restore_text(choice["text"], pseudonyms)
        for key in ("message", "delta"):
            message = choice.get(key)
            if isinstance(message, dict):
                _restore_message(message, pseudonyms)
    return result


def _restore_message(message: dict[str, Any], pseudonyms: PseudonymMap) -> None:
    for key in ("content", "refusal", "reasoning_content"):
        value = message.get(key)
        if isinstance(value, str):
            message[key] = restore_text(value, pseudonyms)
        elif isinstance(value, list):
            for part in value:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    part["text"] = restore_text(part["text"], pseudonyms)
    calls = [c.get("function") for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    calls.append(message.get("function_call"))
    for function in calls:
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            function["arguments"] = restore_text(
                function["arguments"], pseudonyms, json_escape=True
            )


class SSERestorer:
    """Restore a stream of ``chat.completion.chunk`` (or completions) objects.

    ``feed_chunk`` returns the chunk with each choice's delta restored and any partial
    placeholder held back; a choice's held text is released in the chunk that carries its
    ``finish_reason``. ``flush`` returns what is still held (choice index -> text) when the
    stream ends without one.
    """

    def __init__(self, pseudonyms: PseudonymMap) -> None:
        self._pseudonyms = pseudonyms
        self._streams: dict[tuple[int, str], StreamRestorer] = {}

    def _stream(self, index: int, field: str) -> StreamRestorer:
        key = (index, field)
        if key not in self._streams:
            self._streams[key] = StreamRestorer(
                self._pseudonyms, json_escape=field.startswith("tool")
            )
        return self._streams[key]

    def feed_chunk(self, chunk: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = copy.deepcopy(dict(chunk))
        if not self._pseudonyms:
            return result
        for choice in result.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            index = int(choice.get("index") or 0)
            finished = choice.get("finish_reason") is not None
            if isinstance(choice.get("text"), str):
                choice["text"] = self._feed(index, "text", choice["text"], finished)
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            if isinstance(delta.get("content"), str) or (finished and self._held(index, "content")):
                delta["content"] = self._feed(
                    index, "content", delta.get("content") or "", finished
                )
            for call in delta.get("tool_calls") or []:
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                    field = f"tool{call.get('index', 0)}"
                    function["arguments"] = self._feed(
                        index, field, function["arguments"], finished
                    )
        return result

    def _held(self, index: int, field: str) -> bool:
        stream = self._streams.get((index, field))
        return stream is not None and stream.pending > 0

    def _feed(self, index: int, field: str, text: str, finished: bool) -> str:
        stream = self._stream(index, field)
        out = stream.feed(text)
        return out + stream.flush() if finished else out

    def flush(self) -> dict[int, str]:
        """Held text per choice index (content streams), for a final chunk."""
        out: dict[int, str] = {}
        for (index, field), stream in self._streams.items():
            rest = stream.flush()
            if rest and field in ("content", "text"):
                out[index] = out.get(index, "") + rest
        return out


class PseudonymRestorer:
    """Restores one request's pseudonyms in a JSON answer or an SSE stream, holding back only a
    possible partial placeholder at a chunk boundary (the pipeline's ``Restorer``)."""

    def __init__(self, sanitized: Any) -> None:
        self._pseudonyms: PseudonymMap = sanitized.pseudonyms
        self._stream = SSERestorer(self._pseudonyms)
        self._last: dict[str, Any] = {}

    def restore_body(self, body: dict[str, Any]) -> dict[str, Any]:
        return restore_response_body(body, self._pseudonyms)

    def restore_event(self, event: dict[str, Any]) -> dict[str, Any]:
        self._last = {k: event[k] for k in ("id", "object", "created") if k in event}
        return self._stream.feed_chunk(event)

    def flush_event(self) -> dict[str, Any] | None:
        tails = self._stream.flush()
        if not any(tails.values()):
            return None
        return {
            **self._last,
            "choices": [
                {"index": index, "delta": {"content": text}, "finish_reason": None}
                for index, text in sorted(tails.items())
                if text
            ],
        }
