"""Every text an OpenAI ``chat/completions`` or ``completions`` body carries, and how to rewrite it.

Paths name where a text sits: ``messages[2].content``, ``messages[1].content[0].text``,
``messages[0].name``, ``messages[3].tool_calls[0].function.arguments``,
``messages[3].tool_calls[0].function.name``, ``messages[3].function_call.arguments``,
``prompt``, ``prompt[1]``.

Tool-call arguments are JSON carried in a string. Detection sees them twice: the raw string (so a
value split over JSON structure or an unparseable string is still seen) and every decoded string
value, at a path with a JSON pointer after ``#``:
``messages[3].tool_calls[0].function.arguments#/record/iban``. :func:`replace_texts` accepts
either form for one arguments string (not both): decoded values are set and the arguments are
re-encoded as compact JSON.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from gateway.detect.errors import TextPathError
from gateway.detect.findings import TextRef

__all__ = ["ARGS_POINTER_SEP", "extract_texts", "replace_texts", "split_pointer_path"]

ARGS_POINTER_SEP = "#"

_ARGUMENT_HOLDERS = ("function_call",)
_STEP = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def extract_texts(body: Mapping[str, Any]) -> list[TextRef]:
    """Return every text in a chat/completions or completions request body, in body order."""
    refs: list[TextRef] = []
    messages = body.get("messages")
    if isinstance(messages, list):
        for i, message in enumerate(messages):
            if isinstance(message, Mapping):
                refs.extend(_message_texts(f"messages[{i}]", message))
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        refs.append(TextRef("prompt", prompt))
    elif isinstance(prompt, list):
        for i, item in enumerate(prompt):
            if isinstance(item, str):
                refs.append(TextRef(f"prompt[{i}]", item))
    return refs


def _message_texts(base: str, message: Mapping[str, Any]) -> Iterator[TextRef]:
    content = message.get("content")
    if isinstance(content, str):
        yield TextRef(f"{base}.content", content)
    elif isinstance(content, list):
        for j, part in enumerate(content):
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                yield TextRef(f"{base}.content[{j}].text", part["text"])
            elif isinstance(part, str):
                yield TextRef(f"{base}.content[{j}]", part)
    name = message.get("name")
    if isinstance(name, str):
        yield TextRef(f"{base}.name", name)
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for k, call in enumerate(tool_calls):
            if isinstance(call, Mapping) and isinstance(call.get("function"), Mapping):
                yield from _function_texts(f"{base}.tool_calls[{k}].function", call["function"])
    for holder in _ARGUMENT_HOLDERS:
        function = message.get(holder)
        if isinstance(function, Mapping):
            yield from _function_texts(f"{base}.{holder}", function)


def _function_texts(base: str, function: Mapping[str, Any]) -> Iterator[TextRef]:
    name = function.get("name")
    if isinstance(name, str):
        yield TextRef(f"{base}.name", name)
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        return
    path = f"{base}.arguments"
    yield TextRef(path, arguments)
    try:
        decoded = json.loads(arguments)
    except ValueError:
        return
    for pointer, value in _json_strings(decoded, ""):
        yield TextRef(f"{path}{ARGS_POINTER_SEP}{pointer}", value)


def _json_strings(value: object, pointer: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield pointer or "/", value
    elif isinstance(value, dict):
        for key, item in value.items():
            escaped = str(key).replace("~", "~0").replace("/", "~1")
            yield from _json_strings(item, f"{pointer}/{escaped}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _json_strings(item, f"{pointer}/{index}")


def split_pointer_path(path: str) -> tuple[str, str | None]:
    """Split ``...arguments#/a/b`` into the arguments path and the JSON pointer (or None)."""
    if ARGS_POINTER_SEP in path:
        head, _, pointer = path.partition(ARGS_POINTER_SEP)
        return head, pointer
    return path, None


def replace_texts(body: Mapping[str, Any], replacements: Mapping[str, str]) -> dict[str, Any]:
    """Return a deep copy of ``body`` with the texts at the given paths replaced.

    Raises :class:`TextPathError` when a path names no text in the body.
    """
    result: dict[str, Any] = copy.deepcopy(dict(body))
    decoded_edits: dict[str, dict[str, str]] = {}
    for path, new_text in replacements.items():
        head, pointer = split_pointer_path(path)
        if pointer is None:
            _set_text(result, path, new_text)
        else:
            decoded_edits.setdefault(head, {})[pointer] = new_text
    for head, edits in decoded_edits.items():
        if head in replacements:
            raise TextPathError(
                f"both the raw arguments and decoded values were given for {head}; "
                "give one or the other"
            )
        raw = _get_text(result, head)
        try:
            decoded = json.loads(raw)
        except ValueError:
            raise TextPathError(
                f"{head} is not JSON, so decoded paths under it cannot be replaced"
            ) from None
        for pointer, new_text in edits.items():
            decoded = _set_pointer(decoded, pointer, new_text, head)
        _set_text(result, head, json.dumps(decoded, ensure_ascii=False))
    return result


def _steps(path: str) -> list[str | int]:
    steps: list[str | int] = []
    pos = 0
    while pos < len(path):
        match = _STEP.match(path, pos)
        if match is None or match.end() == pos:
            raise TextPathError(f"text path {path!r} is malformed at character {pos}")
        steps.append(match.group(1) if match.group(1) is not None else int(match.group(2)))
        pos = match.end()
    if not steps:
        raise TextPathError("empty text path")
    return steps


def _walk(body: Any, steps: list[str | int], path: str) -> Any:
    node = body
    for step in steps:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            raise TextPathError(f"text path {path!r} names nothing in the request body") from None
    return node


def _get_text(body: dict[str, Any], path: str) -> str:
    value = _walk(body, _steps(path), path)
    if not isinstance(value, str):
        raise TextPathError(f"text path {path!r} does not name a string")
    return value


def _set_text(body: dict[str, Any], path: str, new_text: str) -> None:
    steps = _steps(path)
    parent = _walk(body, steps[:-1], path)
    last = steps[-1]
    try:
        current = parent[last]
    except (KeyError, IndexError, TypeError):
        raise TextPathError(f"text path {path!r} names nothing in the request body") from None
    if not isinstance(current, str):
        raise TextPathError(f"text path {path!r} does not name a string")
    parent[last] = new_text


def _set_pointer(doc: Any, pointer: str, new_text: str, head: str) -> Any:
    if pointer in ("", "/"):
        if not isinstance(doc, str):
            raise TextPathError(f"{head}#{pointer} does not name a string")
        return new_text
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]
    node = doc
    for token in tokens[:-1]:
        node = _pointer_step(node, token, head, pointer)
    last = tokens[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise TextPathError(f"{head}#{pointer} names nothing in the arguments")
        if not isinstance(node[int(last)], str):
            raise TextPathError(f"{head}#{pointer} does not name a string")
        node[int(last)] = new_text
    elif isinstance(node, dict) and isinstance(node.get(last), str):
        node[last] = new_text
    else:
        raise TextPathError(f"{head}#{pointer} does not name a string in the arguments")
    return doc


def _pointer_step(node: Any, token: str, head: str, pointer: str) -> Any:
    if isinstance(node, list) and token.isdigit() and int(token) < len(node):
        return node[int(token)]
    if isinstance(node, dict) and token in node:
        return node[token]
    raise TextPathError(f"{head}#{pointer} names nothing in the arguments")
