"""Every text an OpenAI request carries, read from its typed model, and the body rebuilt with
some of them replaced.

Which strings are texts is not a list kept here: it is each field's declared role in
:mod:`gateway.api.schemas` (``text``, ``json_text``, ``structure``, ``binary``, ``nested``). A
field added to the schema is read by declaring its role; a field without one does not load.

Paths name where a text sits, built from the schema's field names and positions only, never
from a caller's own keys (a path may be logged or shown by ``bastion policy explain``):

- ``messages[2].content``, ``messages[1].content[0].text``, ``tools[0].function.description``,
  ``prompt``, ``prompt[1]``: fields (``.name``) and list items (``[i]``);
- ``metadata{3}`` the value and ``metadata<3>`` the key of a free-form mapping's 4th entry
  (metadata, logit_bias, JSON schemas, tool parameters; keys are texts too);
- ``...function.arguments#{0}[1]``: after ``#``, a string decoded from JSON text (tool-call
  arguments), in the same notation; ``...arguments#`` is a JSON document that is one string.

:func:`replace_texts` builds a new plain body (a dict) from the request with the texts at the
given paths replaced; it never edits or copies the caller's dict. For a ``json_text`` field,
either the raw string or its decoded values may be replaced (not both); decoded edits re-encode
the JSON compactly.

A plain dict that is not a valid request (``bastion policy test`` cases, tools) is read
generically: every string is a text, keys other than the schema's own field names too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from gateway.api.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    Role,
    role_of,
    schema_vocabulary,
)
from gateway.detect.errors import TextPathError
from gateway.detect.findings import TextRef

__all__ = [
    "ARGS_POINTER_SEP",
    "MAX_DECODED_JSON_CHARS",
    "MAX_SCANNED_BINARY_CHARS",
    "RequestTexts",
    "dump_request",
    "extract_texts",
    "read_request",
    "replace_texts",
    "split_pointer_path",
]

ARGS_POINTER_SEP = "#"
MAX_DECODED_JSON_CHARS = 262_144  # larger JSON texts are scanned raw only (still whole)
MAX_SCANNED_BINARY_CHARS = 4096  # binary strings up to this size (URLs, ids) are read as texts


@dataclass(frozen=True, slots=True)
class RequestTexts:
    """What the gate reads of one request: its texts (in body order) and where binary data
    (images, audio, files) sits."""

    texts: tuple[TextRef, ...]
    binary: tuple[str, ...]
    # Binary strings too long to read as texts (over MAX_SCANNED_BINARY_CHARS): the egress scan
    # skips exactly these values, and only for a route whose policy says ``binary: allow``.
    unscanned: frozenset[str] = frozenset()


def read_request(body: BaseModel | Mapping[str, Any]) -> RequestTexts:
    """Every text and binary place of a typed request (or of a plain body, see module doc)."""
    texts: list[TextRef] = []
    binary = _Binary()
    root = _view(body)
    if isinstance(root, BaseModel):
        _read_model(root, "", texts, binary)
    else:
        _read_generic(root, "", texts)
    return RequestTexts(tuple(texts), tuple(binary.paths), frozenset(binary.unscanned))


def extract_texts(body: BaseModel | Mapping[str, Any]) -> list[TextRef]:
    """Return every text of a request, in body order."""
    return list(read_request(body).texts)


def dump_request(request: BaseModel) -> dict[str, Any]:
    """The plain JSON body of a typed request: the fields the caller set, by wire name."""
    out = replace_texts(request, {})
    return out


def split_pointer_path(path: str) -> tuple[str, str | None]:
    """Split ``...arguments#{0}`` into the JSON text's path and the path inside it (or None)."""
    if ARGS_POINTER_SEP in path:
        head, _, pointer = path.partition(ARGS_POINTER_SEP)
        return head, pointer
    return path, None


def replace_texts(
    body: BaseModel | Mapping[str, Any], replacements: Mapping[str, str]
) -> dict[str, Any]:
    """A new plain body with the texts at ``replacements``' paths replaced.

    Raises :class:`TextPathError` when a path names no text of the request.
    """
    for path in replacements:
        head, pointer = split_pointer_path(path)
        if pointer is not None and head in replacements:
            raise TextPathError(
                f"both the raw text and decoded values were given for {head}; give one or the other"
            )
    used: set[str] = set()
    root = _view(body)
    if isinstance(root, BaseModel):
        out = _build_model(root, "", replacements, used)
    else:
        out = _build_generic(root, "", replacements, used)
    missing = sorted(set(replacements) - used)
    if missing:
        raise TextPathError(f"text path {missing[0]!r} names no text in the request body")
    if not isinstance(out, dict):  # pragma: no cover - a request is an object
        raise TextPathError("the request body is not an object")
    return out


# -- views -----------------------------------------------------------------------------------


def _view(body: BaseModel | Mapping[str, Any]) -> BaseModel | Mapping[str, Any]:
    """The typed request for a body that is one, else the body itself (read generically)."""
    if isinstance(body, BaseModel):
        return body
    model: type[BaseModel] | None = None
    if "messages" in body:
        model = ChatCompletionRequest
    elif "prompt" in body:
        model = CompletionRequest
    if model is None or not isinstance(body, dict):
        return body
    try:
        return model.model_validate(body)
    except ValidationError:
        return body


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _fields(model: BaseModel) -> Iterator[tuple[str, Role, Any]]:
    cls = type(model)
    for name, info in cls.model_fields.items():
        if name in model.model_fields_set:
            yield info.alias or name, role_of(cls, name), getattr(model, name)


# -- reading ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Binary:
    paths: list[str] = field(default_factory=list)
    unscanned: list[str] = field(default_factory=list)


def _read_model(model: BaseModel, path: str, texts: list[TextRef], binary: _Binary) -> None:
    for wire, role, value in _fields(model):
        _read_value(value, _join(path, wire), role, texts, binary)


def _read_value(value: Any, path: str, role: Role, texts: list[TextRef], binary: _Binary) -> None:
    if isinstance(value, BaseModel):
        if role is Role.BINARY:
            binary.paths.append(
                path
            )  # an image/audio/file part: its own text fields are read below
        _read_model(value, path, texts, binary)
    elif isinstance(value, str):
        if role is Role.BINARY:
            binary.paths.append(path)
            if len(value) <= MAX_SCANNED_BINARY_CHARS:
                texts.append(TextRef(path, value))  # a URL or short data: a secret is seen
            else:
                binary.unscanned.append(value)
        elif role in (Role.TEXT, Role.JSON_TEXT):
            texts.append(TextRef(path, value))
            if role is Role.JSON_TEXT:
                _read_json_text(value, path, texts)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _read_value(item, f"{path}[{i}]", role, texts, binary)
    elif isinstance(value, dict):
        for i, (key, item) in enumerate(value.items()):
            if role in (Role.TEXT, Role.JSON_TEXT):
                texts.append(TextRef(f"{path}<{i}>", str(key)))
            _read_value(item, f"{path}{{{i}}}", role, texts, binary)


def _read_json_text(raw: str, path: str, texts: list[TextRef]) -> None:
    decoded = _decode(raw)
    if decoded is not None:
        _read_json(decoded[0], path + ARGS_POINTER_SEP, texts)


def _decode(raw: str) -> tuple[Any] | None:
    if len(raw) > MAX_DECODED_JSON_CHARS:
        return None
    try:
        return (json.loads(raw),)
    except (ValueError, RecursionError):
        return None


def _read_json(value: Any, path: str, texts: list[TextRef]) -> None:
    if isinstance(value, str):
        texts.append(TextRef(path, value))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _read_json(item, f"{path}[{i}]", texts)
    elif isinstance(value, dict):
        for i, (key, item) in enumerate(value.items()):
            texts.append(TextRef(f"{path}<{i}>", str(key)))
            _read_json(item, f"{path}{{{i}}}", texts)


def _read_generic(value: Any, path: str, texts: list[TextRef]) -> None:
    vocabulary = schema_vocabulary()
    if isinstance(value, str):
        texts.append(TextRef(path, value))
        if path.endswith(".arguments"):
            _read_json_text(value, path, texts)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _read_generic(item, f"{path}[{i}]", texts)
    elif isinstance(value, Mapping):
        for i, (key, item) in enumerate(value.items()):
            if isinstance(key, str) and key in vocabulary:
                _read_generic(item, _join(path, key), texts)
            else:
                texts.append(TextRef(f"{path}<{i}>", str(key)))
                _read_generic(item, f"{path}{{{i}}}", texts)


# -- building --------------------------------------------------------------------------------


def _take(path: str, current: str, replacements: Mapping[str, str], used: set[str]) -> str:
    if path in replacements:
        used.add(path)
        return replacements[path]
    return current


def _build_model(
    model: BaseModel, path: str, replacements: Mapping[str, str], used: set[str]
) -> dict[str, Any]:
    return {
        wire: _build_value(value, _join(path, wire), role, replacements, used)
        for wire, role, value in _fields(model)
    }


def _build_value(
    value: Any, path: str, role: Role, replacements: Mapping[str, str], used: set[str]
) -> Any:
    if isinstance(value, BaseModel):
        return _build_model(value, path, replacements, used)
    textual = role in (Role.TEXT, Role.JSON_TEXT)
    if isinstance(value, str):
        if role is Role.BINARY and len(value) <= MAX_SCANNED_BINARY_CHARS:
            return _take(path, value, replacements, used)  # read as a text, so replaceable
        if not textual:
            return value
        if role is Role.JSON_TEXT and path not in replacements:
            return _build_json_text(value, path, replacements, used)
        return _take(path, value, replacements, used)
    if isinstance(value, list):
        return [
            _build_value(item, f"{path}[{i}]", role, replacements, used)
            for i, item in enumerate(value)
        ]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for i, (key, item) in enumerate(value.items()):
            new_key = _take(f"{path}<{i}>", key, replacements, used) if textual else key
            if new_key in out:
                raise TextPathError(f"two keys of {path or 'the body'} are equal after rewriting")
            out[new_key] = _build_value(item, f"{path}{{{i}}}", role, replacements, used)
        return out
    return value


def _build_json_text(raw: str, path: str, replacements: Mapping[str, str], used: set[str]) -> str:
    prefix = path + ARGS_POINTER_SEP
    if not any(p.startswith(prefix) for p in replacements):
        return raw
    decoded = _decode(raw)
    if decoded is None:
        raise TextPathError(f"{path} is not JSON, so decoded paths under it cannot be replaced")
    rebuilt = _build_json(decoded[0], prefix, replacements, used)
    return json.dumps(rebuilt, ensure_ascii=False)


def _build_json(value: Any, path: str, replacements: Mapping[str, str], used: set[str]) -> Any:
    if isinstance(value, str):
        return _take(path, value, replacements, used)
    if isinstance(value, list):
        return [_build_json(v, f"{path}[{i}]", replacements, used) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for i, (key, item) in enumerate(value.items()):
            new_key = _take(f"{path}<{i}>", key, replacements, used)
            if new_key in out:
                raise TextPathError(f"two keys of {path} are equal after rewriting")
            out[new_key] = _build_json(item, f"{path}{{{i}}}", replacements, used)
        return out
    return value


def _build_generic(value: Any, path: str, replacements: Mapping[str, str], used: set[str]) -> Any:
    vocabulary = schema_vocabulary()
    if isinstance(value, str):
        if path.endswith(".arguments") and path not in replacements:
            return _build_json_text(value, path, replacements, used)
        return _take(path, value, replacements, used)
    if isinstance(value, list):
        return [_build_generic(v, f"{path}[{i}]", replacements, used) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for i, (key, item) in enumerate(value.items()):
            if isinstance(key, str) and key in vocabulary:
                out[key] = _build_generic(item, _join(path, key), replacements, used)
                continue
            new_key = _take(f"{path}<{i}>", str(key), replacements, used)
            if new_key in out:
                raise TextPathError(f"two keys of {path or 'the body'} are equal after rewriting")
            out[new_key] = _build_generic(item, f"{path}{{{i}}}", replacements, used)
        return out
    return value
