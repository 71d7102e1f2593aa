"""The whole request surface of ``POST /v1/chat/completions`` and ``POST /v1/completions``,
typed, strict and closed: the single source of truth for what a request may carry.

- **Strict**: no coercion (``"max_tokens": "8"``, ``"stream": "yes"`` and ``"tools": "x"`` are
  400s naming the field); ``NaN``/``Infinity`` are refused before this (see ``gateway.api.body``).
- **Closed**: an unknown field, at any level, is a 400 that names it (``param``), as OpenAI's
  API does, unless the operator lists it in ``limits.passthrough_fields`` (top level only): then
  it is a declared *text* field, scanned and sanitized like any other.
- **Every field declares its role** (``Annotated[..., Role.X]``; a test walks every model and
  proves none is missing):

  - ``text``: a caller's words. Detected, sanitized, restored. In a free-form mapping (metadata,
    logit_bias, JSON schemas, tool parameters) keys are texts too.
  - ``json_text``: text that carries JSON (tool-call arguments): the raw string and every
    decoded string are texts.
  - ``structure``: numbers, booleans, enums (``Literal``), the model alias. Forwarded as typed;
    they cannot hold free text because their type does not allow it.
  - ``binary``: image, audio and file parts and their data. Not scannable as a whole, so a
    managed route refuses the request (the pipeline takes the policy's ``on_error`` route).
    Short binary strings (URLs, ids: up to ``MAX_SCANNED_BINARY_CHARS``) are read as texts
    too, so a secret in one is still denied; a part's own text fields (``filename``) are text.
  - ``nested``: a field that only holds typed objects; their own fields declare roles.

The field tables are printed by ``field_roles()`` (used in the docs and in the tests).

Validation errors become 400s naming the field, never echoing a value
(:func:`gateway.api.validation.parse_body`): messages are written there, not copied from
pydantic, and a caller's own mapping keys are never put in ``param``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Sequence
from functools import cache
from typing import Annotated, Any, Literal, TypeAlias, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    create_model,
)

from gateway.errors import ConfigError

__all__ = [
    "ChatCompletionRequest",
    "CompletionRequest",
    "OpenAIRequest",
    "RequestSchemas",
    "Role",
    "field_roles",
    "role_of",
    "schema_vocabulary",
]


class Role(enum.Enum):
    """What a field is to the gate (see the module docstring)."""

    TEXT = "text"
    JSON_TEXT = "json_text"
    STRUCTURE = "structure"
    BINARY = "binary"
    NESTED = "nested"


TEXT = Role.TEXT
JSON_TEXT = Role.JSON_TEXT
STRUCT = Role.STRUCTURE
BINARY = Role.BINARY
NESTED = Role.NESTED

# Named limits of the typed surface (OpenAI's own where it has one).
MAX_NAME_CHARS = 256
MAX_STOP_SEQUENCES = 4
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
MAX_TOOLS = 128
MAX_LOGIT_BIAS = 1024
MAX_PROMPT_ITEMS = 2048

JSONObject: TypeAlias = dict[str, Any]  # free-form JSON (already bounded by gateway.api.body)


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, allow_inf_nan=False, populate_by_name=False
    )


def _tag(key: str) -> Any:
    """A callable discriminator on ``key`` (tags are ``key=value``, so the error path can tell a
    tag from a field name and never shows it)."""

    def pick(value: Any) -> str | None:
        raw = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
        return f"{key}={raw}" if isinstance(raw, str) else None

    return Discriminator(pick)


Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]

# -- content parts -------------------------------------------------------------------------


class TextPart(_Strict):
    type: Annotated[Literal["text"], STRUCT]
    text: Annotated[str, TEXT]


class ImageURL(_Strict):
    url: Annotated[str, BINARY]  # a data: URL or a link: either way not scannable
    detail: Annotated[Literal["auto", "low", "high"] | None, STRUCT] = None


class ImagePart(_Strict):
    type: Annotated[Literal["image_url"], STRUCT]
    image_url: Annotated[ImageURL, BINARY]


class InputAudio(_Strict):
    data: Annotated[str, BINARY]
    format: Annotated[Literal["wav", "mp3"], STRUCT]


class AudioPart(_Strict):
    type: Annotated[Literal["input_audio"], STRUCT]
    input_audio: Annotated[InputAudio, BINARY]


class FileRef(_Strict):
    file_data: Annotated[str | None, BINARY] = None
    file_id: Annotated[str | None, TEXT] = None
    filename: Annotated[str | None, TEXT] = None


class FilePart(_Strict):
    type: Annotated[Literal["file"], STRUCT]
    file: Annotated[FileRef, BINARY]


class RefusalPart(_Strict):
    type: Annotated[Literal["refusal"], STRUCT]
    refusal: Annotated[str, TEXT]


UserPart = Annotated[
    Annotated[TextPart, Tag("type=text")]
    | Annotated[ImagePart, Tag("type=image_url")]
    | Annotated[AudioPart, Tag("type=input_audio")]
    | Annotated[FilePart, Tag("type=file")],
    _tag("type"),
]
AssistantPart = Annotated[
    Annotated[TextPart, Tag("type=text")] | Annotated[RefusalPart, Tag("type=refusal")],
    _tag("type"),
]

# -- tool calls ----------------------------------------------------------------------------


class FunctionCall(_Strict):
    name: Annotated[Name, TEXT]
    arguments: Annotated[str, JSON_TEXT]


class FunctionToolCall(_Strict):
    id: Annotated[str, TEXT]  # the caller's (or the upstream's) id: caller-controlled text
    type: Annotated[Literal["function"], STRUCT]
    function: Annotated[FunctionCall, NESTED]


class CustomCall(_Strict):
    name: Annotated[Name, TEXT]
    input: Annotated[str, TEXT]


class CustomToolCall(_Strict):
    id: Annotated[str, TEXT]
    type: Annotated[Literal["custom"], STRUCT]
    custom: Annotated[CustomCall, NESTED]


ToolCall = Annotated[
    Annotated[FunctionToolCall, Tag("type=function")]
    | Annotated[CustomToolCall, Tag("type=custom")],
    _tag("type"),
]


class AssistantAudioRef(_Strict):
    id: Annotated[str, TEXT]


# -- messages ------------------------------------------------------------------------------


class SystemMessage(_Strict):
    role: Annotated[Literal["system"], STRUCT]
    content: Annotated[str | list[TextPart], TEXT]
    name: Annotated[Name | None, TEXT] = None


class DeveloperMessage(_Strict):
    role: Annotated[Literal["developer"], STRUCT]
    content: Annotated[str | list[TextPart], TEXT]
    name: Annotated[Name | None, TEXT] = None


class UserMessage(_Strict):
    role: Annotated[Literal["user"], STRUCT]
    content: Annotated[str | list[UserPart], TEXT]
    name: Annotated[Name | None, TEXT] = None


class AssistantMessage(_Strict):
    role: Annotated[Literal["assistant"], STRUCT]
    content: Annotated[str | list[AssistantPart] | None, TEXT] = None
    refusal: Annotated[str | None, TEXT] = None
    name: Annotated[Name | None, TEXT] = None
    audio: Annotated[AssistantAudioRef | None, NESTED] = None
    tool_calls: Annotated[list[ToolCall] | None, NESTED] = None
    function_call: Annotated[FunctionCall | None, NESTED] = None


class ToolMessage(_Strict):
    role: Annotated[Literal["tool"], STRUCT]
    content: Annotated[str | list[TextPart], TEXT]
    tool_call_id: Annotated[str, TEXT]


class FunctionMessage(_Strict):
    role: Annotated[Literal["function"], STRUCT]
    content: Annotated[str | None, TEXT]
    name: Annotated[Name, TEXT]


Message = Annotated[
    Annotated[SystemMessage, Tag("role=system")]
    | Annotated[DeveloperMessage, Tag("role=developer")]
    | Annotated[UserMessage, Tag("role=user")]
    | Annotated[AssistantMessage, Tag("role=assistant")]
    | Annotated[ToolMessage, Tag("role=tool")]
    | Annotated[FunctionMessage, Tag("role=function")],
    _tag("role"),
]

# -- tools, formats, options ---------------------------------------------------------------


class FunctionDefinition(_Strict):
    name: Annotated[Name, TEXT]
    description: Annotated[str | None, TEXT] = None
    parameters: Annotated[JSONObject | None, TEXT] = None  # a JSON Schema: keys and values
    strict: Annotated[bool | None, STRUCT] = None


class FunctionTool(_Strict):
    type: Annotated[Literal["function"], STRUCT]
    function: Annotated[FunctionDefinition, NESTED]


class Grammar(_Strict):
    definition: Annotated[str, TEXT]
    syntax: Annotated[Literal["lark", "regex"], STRUCT]


class GrammarFormat(_Strict):
    type: Annotated[Literal["grammar"], STRUCT]
    grammar: Annotated[Grammar, NESTED]


class TextFormat(_Strict):
    type: Annotated[Literal["text"], STRUCT]


class CustomDefinition(_Strict):
    name: Annotated[Name, TEXT]
    description: Annotated[str | None, TEXT] = None
    format: Annotated[
        Annotated[
            Annotated[TextFormat, Tag("type=text")] | Annotated[GrammarFormat, Tag("type=grammar")],
            _tag("type"),
        ]
        | None,
        NESTED,
    ] = None


class CustomTool(_Strict):
    type: Annotated[Literal["custom"], STRUCT]
    custom: Annotated[CustomDefinition, NESTED]


Tool = Annotated[
    Annotated[FunctionTool, Tag("type=function")] | Annotated[CustomTool, Tag("type=custom")],
    _tag("type"),
]


class NamedFunction(_Strict):
    name: Annotated[Name, TEXT]


class ToolChoiceFunction(_Strict):
    type: Annotated[Literal["function"], STRUCT]
    function: Annotated[NamedFunction, NESTED]


class ToolChoiceCustom(_Strict):
    type: Annotated[Literal["custom"], STRUCT]
    custom: Annotated[NamedFunction, NESTED]


class AllowedTools(_Strict):
    mode: Annotated[Literal["auto", "required"], STRUCT]
    tools: Annotated[list[JSONObject], TEXT]  # tool references: free-form, so text


class ToolChoiceAllowed(_Strict):
    type: Annotated[Literal["allowed_tools"], STRUCT]
    allowed_tools: Annotated[AllowedTools, NESTED]


ToolChoice = (
    Literal["none", "auto", "required"]
    | Annotated[
        Annotated[ToolChoiceFunction, Tag("type=function")]
        | Annotated[ToolChoiceCustom, Tag("type=custom")]
        | Annotated[ToolChoiceAllowed, Tag("type=allowed_tools")],
        _tag("type"),
    ]
)


class JSONSchemaSpec(_Strict):
    name: Annotated[Annotated[str, Field(max_length=64)], TEXT]
    description: Annotated[str | None, TEXT] = None
    schema_: Annotated[JSONObject | None, TEXT, Field(alias="schema")] = None
    strict: Annotated[bool | None, STRUCT] = None


class ResponseFormatText(_Strict):
    type: Annotated[Literal["text"], STRUCT]


class ResponseFormatJSONObject(_Strict):
    type: Annotated[Literal["json_object"], STRUCT]


class ResponseFormatJSONSchema(_Strict):
    type: Annotated[Literal["json_schema"], STRUCT]
    json_schema: Annotated[JSONSchemaSpec, NESTED]


ResponseFormat = Annotated[
    Annotated[ResponseFormatText, Tag("type=text")]
    | Annotated[ResponseFormatJSONObject, Tag("type=json_object")]
    | Annotated[ResponseFormatJSONSchema, Tag("type=json_schema")],
    _tag("type"),
]


class Prediction(_Strict):
    type: Annotated[Literal["content"], STRUCT]
    content: Annotated[str | list[TextPart], TEXT]


class AudioOutput(_Strict):
    voice: Annotated[Annotated[str, Field(max_length=MAX_NAME_CHARS)], TEXT]  # or a custom id
    format: Annotated[Literal["wav", "aac", "mp3", "flac", "opus", "pcm16"], STRUCT]


class StreamOptions(_Strict):
    include_usage: Annotated[bool | None, STRUCT] = None
    include_obfuscation: Annotated[bool | None, STRUCT] = None


class ApproximateLocation(_Strict):
    city: Annotated[str | None, TEXT] = None
    country: Annotated[str | None, TEXT] = None
    region: Annotated[str | None, TEXT] = None
    timezone: Annotated[str | None, TEXT] = None


class UserLocation(_Strict):
    type: Annotated[Literal["approximate"], STRUCT]
    approximate: Annotated[ApproximateLocation, NESTED]


class WebSearchOptions(_Strict):
    search_context_size: Annotated[Literal["low", "medium", "high"] | None, STRUCT] = None
    user_location: Annotated[UserLocation | None, NESTED] = None


class LegacyFunctionChoice(_Strict):
    name: Annotated[Name, TEXT]


Penalty = Annotated[float, Field(ge=-2, le=2)]
Stop = str | Annotated[list[str], Field(max_length=MAX_STOP_SEQUENCES)]
LogitBias = Annotated[
    dict[
        Annotated[str, Field(pattern=r"^[0-9]{1,7}$")],  # token ids
        Annotated[float, Field(ge=-100, le=100)],
    ],
    Field(max_length=MAX_LOGIT_BIAS),
]
Metadata = Annotated[
    dict[
        Annotated[str, Field(max_length=MAX_METADATA_KEY_CHARS)],
        Annotated[str, Field(max_length=MAX_METADATA_VALUE_CHARS)],
    ],
    Field(max_length=MAX_METADATA_PAIRS),
]


class _Common(_Strict):
    """Fields both endpoints share."""

    model: Annotated[Annotated[str, Field(min_length=1, max_length=256)], STRUCT]
    stream: Annotated[bool | None, STRUCT] = None
    stream_options: Annotated[StreamOptions | None, NESTED] = None
    max_tokens: Annotated[Annotated[int, Field(ge=1)] | None, STRUCT] = None
    temperature: Annotated[Annotated[float, Field(ge=0, le=2)] | None, STRUCT] = None
    top_p: Annotated[Annotated[float, Field(ge=0, le=1)] | None, STRUCT] = None
    n: Annotated[Annotated[int, Field(ge=1, le=1)] | None, STRUCT] = None
    stop: Annotated[Stop | None, TEXT] = None
    seed: Annotated[int | None, STRUCT] = None
    user: Annotated[Annotated[str, Field(max_length=MAX_NAME_CHARS)] | None, TEXT] = None
    frequency_penalty: Annotated[Penalty | None, STRUCT] = None
    presence_penalty: Annotated[Penalty | None, STRUCT] = None
    logit_bias: Annotated[LogitBias | None, TEXT] = None


class ChatCompletionRequest(_Common):
    """``POST /v1/chat/completions``."""

    messages: Annotated[Annotated[list[Message], Field(min_length=1)], NESTED]
    max_completion_tokens: Annotated[Annotated[int, Field(ge=1)] | None, STRUCT] = None
    logprobs: Annotated[bool | None, STRUCT] = None
    top_logprobs: Annotated[Annotated[int, Field(ge=0, le=20)] | None, STRUCT] = None
    modalities: Annotated[list[Literal["text", "audio"]] | None, STRUCT] = None
    audio: Annotated[AudioOutput | None, NESTED] = None
    prediction: Annotated[Prediction | None, NESTED] = None
    response_format: Annotated[ResponseFormat | None, NESTED] = None
    service_tier: Annotated[
        Literal["auto", "default", "flex", "scale", "priority"] | None, STRUCT
    ] = None
    store: Annotated[bool | None, STRUCT] = None
    metadata: Annotated[Metadata | None, TEXT] = None
    tools: Annotated[Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None, NESTED] = None
    tool_choice: Annotated[ToolChoice | None, TEXT] = None
    parallel_tool_calls: Annotated[bool | None, STRUCT] = None
    functions: Annotated[
        Annotated[list[FunctionDefinition], Field(max_length=MAX_TOOLS)] | None, NESTED
    ] = None
    function_call: Annotated[Literal["none", "auto"] | LegacyFunctionChoice | None, TEXT] = None
    reasoning_effort: Annotated[
        Literal["none", "minimal", "low", "medium", "high"] | None, STRUCT
    ] = None
    verbosity: Annotated[Literal["low", "medium", "high"] | None, STRUCT] = None
    web_search_options: Annotated[WebSearchOptions | None, NESTED] = None
    safety_identifier: Annotated[Annotated[str, Field(max_length=MAX_NAME_CHARS)] | None, TEXT] = (
        None
    )
    prompt_cache_key: Annotated[Annotated[str, Field(max_length=MAX_NAME_CHARS)] | None, TEXT] = (
        None
    )


Prompt = (
    str
    | Annotated[list[str], Field(min_length=1, max_length=MAX_PROMPT_ITEMS)]
    | Annotated[list[int], Field(min_length=1)]
    | Annotated[list[list[int]], Field(min_length=1, max_length=MAX_PROMPT_ITEMS)]
)


class CompletionRequest(_Common):
    """``POST /v1/completions`` (legacy)."""

    prompt: Annotated[Prompt, TEXT]
    suffix: Annotated[str | None, TEXT] = None
    echo: Annotated[bool | None, STRUCT] = None
    best_of: Annotated[Annotated[int, Field(ge=1, le=1)] | None, STRUCT] = None
    logprobs: Annotated[Annotated[int, Field(ge=0, le=5)] | None, STRUCT] = None


OpenAIRequest: TypeAlias = ChatCompletionRequest | CompletionRequest
_ROOTS: tuple[type[_Strict], ...] = (ChatCompletionRequest, CompletionRequest)

# -- roles ---------------------------------------------------------------------------------


def role_of(model: type[BaseModel], name: str) -> Role:
    """The declared role of ``model.name`` (a missing role is a programming error)."""
    info = model.model_fields[name]
    roles = [m for m in info.metadata if isinstance(m, Role)]
    if len(roles) != 1:
        raise TypeError(f"{model.__name__}.{name} declares {len(roles)} roles; it must declare one")
    return roles[0]


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in get_args(annotation):
        yield from _models_in(arg)


def _literals_in(annotation: Any) -> Iterator[str]:
    if get_origin(annotation) is Literal:
        yield from (a for a in get_args(annotation) if isinstance(a, str))
        return
    for arg in get_args(annotation):
        yield from _literals_in(arg)


def _all_models(roots: Sequence[type[BaseModel]]) -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []
    stack = list(roots)
    while stack:
        model = stack.pop()
        if model in seen:
            continue
        seen.append(model)
        for info in model.model_fields.values():
            stack.extend(_models_in(info.annotation))
            for meta in info.metadata:
                stack.extend(_models_in(meta))
    return seen


def field_roles(
    roots: Sequence[type[BaseModel]] = _ROOTS,
) -> list[tuple[str, str, Role]]:
    """``(model, wire name, role)`` for every field of every model reachable from ``roots``."""
    out: list[tuple[str, str, Role]] = []
    for model in _all_models(roots):
        for name, info in model.model_fields.items():
            out.append((model.__name__, info.alias or name, role_of(model, name)))
    return out


@cache
def schema_vocabulary() -> frozenset[str]:
    """Every wire field name and every enum value of the typed surface: strings that are the
    schema's own words, never a caller's (the egress scan need not read them again)."""
    words: set[str] = set()
    for model in _all_models(_ROOTS):
        for name, info in model.model_fields.items():
            words.add(info.alias or name)
            words.update(_literals_in(info.annotation))
    return frozenset(words)


# -- schemas with the operator's pass-through fields ---------------------------------------

_PASSTHROUGH_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class RequestSchemas:
    """The two request models, extended once at startup with ``limits.passthrough_fields``:
    each becomes a declared top-level *text* field (any JSON value; every string in it, keys
    included, is scanned and sanitized)."""

    def __init__(self, passthrough_fields: Sequence[str] = ()) -> None:
        names = tuple(passthrough_fields)
        for name in names:
            if not _PASSTHROUGH_NAME.match(name) or name.startswith("model_"):
                raise ConfigError(
                    f"limits.passthrough_fields: {name!r} is not a lowercase field name "
                    "(letters, digits, underscores; not starting with 'model_')"
                )
            if name in ChatCompletionRequest.model_fields or name in CompletionRequest.model_fields:
                raise ConfigError(
                    f"limits.passthrough_fields: {name!r} is already a field of the API; "
                    "remove it from the list"
                )
        self.passthrough_fields = names
        self.chat: type[ChatCompletionRequest] = ChatCompletionRequest
        self.completion: type[CompletionRequest] = CompletionRequest
        if names:
            extra: dict[str, Any] = {n: (Annotated[Any, TEXT], None) for n in names}
            self.chat = create_model(
                "ChatCompletionRequest", __base__=ChatCompletionRequest, **extra
            )
            self.completion = create_model("CompletionRequest", __base__=CompletionRequest, **extra)
