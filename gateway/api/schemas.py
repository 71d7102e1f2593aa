"""Typed OpenAI request bodies, validated once at the edge.

Known fields are type-checked; unknown top-level fields are kept (the OpenAI API grows, and SDKs
send new parameters) and forwarded as they are, after detection has seen every text. Validation
errors become 400s naming the offending field (``param``), never echoing its value.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import InvalidRequest

__all__ = ["ChatCompletionRequest", "CompletionRequest", "parse_body"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ContentPart(_Open):
    type: str
    text: str | None = None


class FunctionCall(_Open):
    name: str = Field(max_length=256)
    arguments: str


class ToolCall(_Open):
    id: str | None = None
    type: str = "function"
    function: FunctionCall


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: Annotated[str, Field(max_length=256)] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    function_call: FunctionCall | None = None


class StreamOptions(_Open):
    include_usage: bool | None = None


class _Common(_Open):
    model: Annotated[str, Field(min_length=1, max_length=256)]
    stream: bool = False
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1, le=1)] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    stream_options: StreamOptions | None = None


class ChatCompletionRequest(_Common):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]


class CompletionRequest(_Common):
    prompt: str | list[str]


def _param(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


M = TypeVar("M", bound=_Common)


def parse_body(model: type[M], body: Any) -> M:
    """Validate a decoded JSON body; raise :class:`InvalidRequest` naming the first bad field."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        param = _param(tuple(first["loc"]))
        raise InvalidRequest(f"invalid value for '{param}': {first['msg']}", param=param) from None
