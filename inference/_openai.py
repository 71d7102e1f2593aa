"""OpenAI wire format: typed request bodies, response and SSE chunk builders, the error shape.

Requests are strict (``extra="forbid"``): a parameter this worker does not implement is refused
with its name rather than silently ignored. Validation messages name fields, never echo values
(values are prompt text).
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "error_body",
    "format_validation_error",
]

# strict: no coercion ("8" is not 8, "yes" is not true); JSON integers still fill float fields.
_STRICT = ConfigDict(extra="forbid", frozen=True, strict=True)
StopList = Annotated[list[Annotated[str, Field(min_length=1, max_length=256)]], Field(max_length=8)]


class TextPart(BaseModel):
    model_config = _STRICT

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = _STRICT

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(default=None, max_length=128)
    tool_call_id: str | None = Field(default=None, max_length=128)

    def template_dict(self) -> dict[str, str]:
        if isinstance(self.content, list):
            text = "".join(part.text for part in self.content)
        else:
            text = self.content or ""
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": text}


class StreamOptions(BaseModel):
    model_config = _STRICT

    include_usage: bool = False


class _Sampling(BaseModel):
    model_config = _STRICT

    model: str = Field(min_length=1, max_length=256)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | StopList | None = None
    # torch.Generator.manual_seed's range (a larger integer would fail in the engine)
    seed: int | None = Field(default=None, ge=-(2**63), le=2**64 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    user: str | None = Field(default=None, max_length=256)
    # vLLM's extensions (not in OpenAI's API), for benchmarks and clients that need a length:
    # ignore_eos keeps generating past end-of-sequence tokens until max_tokens (or a stop
    # string); min_tokens forbids end-of-sequence tokens until that many tokens exist.
    ignore_eos: bool = False
    min_tokens: int = Field(default=0, ge=0)

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        if isinstance(self.stop, str):
            return (self.stop,)
        return tuple(self.stop)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1, max_length=1024)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    max_tokens: int | None = Field(default=16, ge=1)

    @property
    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


def format_validation_error(error: ValidationError) -> tuple[str, str | None]:
    """A message naming each bad field (never its value), and the first field as ``param``."""
    parts: list[str] = []
    param: str | None = None
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "body"
        param = param or where
        if item["type"] == "extra_forbidden":
            parts.append(f"unknown parameter {where!r} (not supported by this worker)")
        else:
            parts.append(f"{where}: {item['msg']}")
    return "invalid request: " + "; ".join(parts), param


def error_body(
    message: str, *, type_: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


class ResponseShape:
    """Builds bodies and chunks for one response (chat or text completion)."""

    def __init__(self, *, chat: bool, response_id: str, model: str) -> None:
        self.chat = chat
        self.id = response_id
        self.model = model
        self.created = int(time.time())

    def _envelope(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def full(
        self, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int
    ) -> dict[str, Any]:
        if self.chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            body = self._envelope("chat.completion")
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
            body = self._envelope("text_completion")
        body["choices"] = [choice]
        body["usage"] = usage(prompt_tokens, completion_tokens)
        return body

    def chunk(
        self, text: str | None, finish_reason: str | None = None, *, first: bool = False
    ) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {}
            if first:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            body = self._envelope("chat.completion.chunk")
        else:
            choice = {
                "index": 0,
                "text": text or "",
                "logprobs": None,
                "finish_reason": finish_reason,
            }
            body = self._envelope("text_completion")
        body["choices"] = [choice]
        return body

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        body = self._envelope("chat.completion.chunk" if self.chat else "text_completion")
        body["choices"] = []
        body["usage"] = usage(prompt_tokens, completion_tokens)
        return body
