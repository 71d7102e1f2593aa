"""Reading a request body: bounded bytes, then JSON that every later step can handle.

Every way a body can fail is an :class:`~gateway.errors.APIError` (OpenAI error shape, 4xx),
decided here, before detection and before the audit trail's decision record:

- over ``limits.max_body_bytes``: 413; empty, not ``application/json``, not UTF-8 or not JSON:
  400 (the message gives line and column, never the bytes);
- ``NaN``, ``Infinity``, ``-Infinity`` and numbers that overflow a float (``1e999``): 400
  (JSON has no such values, and they cannot be serialized back for an upstream);
- integers longer than :data:`MAX_INT_DIGITS` digits: 400 (Python refuses to parse past 4,300
  digits with a ``ValueError``; no API field needs more than 20);
- nesting deeper than :data:`MAX_JSON_DEPTH`: 400 (the decoder's ``RecursionError`` is caught
  too, for bodies deeper than the interpreter allows);
- a string or key holding a lone UTF-16 surrogate (``"\\ud800"``): 400 naming the field (such a
  string cannot be encoded to UTF-8 for any upstream or for the audit trail).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from starlette.requests import Request

from gateway.config import LimitsConfig
from gateway.errors import InvalidRequest, PayloadTooLarge

__all__ = ["MAX_INT_DIGITS", "MAX_JSON_DEPTH", "check_json", "decode_json", "read_json_body"]

MAX_INT_DIGITS = 32
MAX_JSON_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Refused(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _constant(name: str) -> Any:
    raise _Refused(
        f"the request body holds {name}, which JSON does not allow; send a finite number",
        "invalid_number",
    )


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(
            f"the request body holds an integer of {len(text.lstrip('-'))} digits; the limit "
            f"is {MAX_INT_DIGITS}",
            "invalid_number",
        )
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused(
            "the request body holds a number too large for a double; send a finite number",
            "invalid_number",
        )
    return value


def decode_json(raw: bytes) -> Any:
    """Decode and check a JSON document (see module doc); raise :class:`InvalidRequest`."""
    try:
        value = json.loads(raw, parse_constant=_constant, parse_int=_integer, parse_float=_float)
    except _Refused as refused:
        raise InvalidRequest(refused.message, code=refused.code) from None
    except RecursionError:
        raise InvalidRequest(
            f"the request body is nested too deeply; the limit is {MAX_JSON_DEPTH} levels",
            code="too_deep",
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = (
            f" at line {exc.lineno} column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else ""
        )
        raise InvalidRequest(
            f"the request body is not valid JSON{where}", code="invalid_json"
        ) from None
    check_json(value)
    return value


def check_json(value: Any) -> None:
    """Nesting within :data:`MAX_JSON_DEPTH`; no lone surrogate in any string or key."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidRequest(
                f"the request body is nested more than {MAX_JSON_DEPTH} levels deep",
                code="too_deep",
            )
        if isinstance(node, str):
            if _SURROGATE.search(node):
                raise _surrogate(path)
        elif isinstance(node, list):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(node))
        elif isinstance(node, dict):
            for key, item in node.items():
                step = key if re.fullmatch(r"[a-z][a-z0-9_]{0,63}", key) else "?"
                where = f"{path}.{step}" if path else step
                if _SURROGATE.search(key):
                    raise _surrogate(where)
                stack.append((item, where, depth + 1))


def _surrogate(path: str) -> InvalidRequest:
    return InvalidRequest(
        f"invalid value for '{path or 'body'}': it holds a lone UTF-16 surrogate escape "
        "(\\ud800-\\udfff without its pair), which is not text; send valid Unicode",
        param=path or None,
        code="invalid_unicode",
    )


async def read_json_body(request: Request, limits: LimitsConfig) -> Any:
    """Read at most ``max_body_bytes`` (413 beyond) and decode JSON (400 if malformed)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequest("content-length header is not a number")
        if int(declared) > limits.max_body_bytes:
            raise PayloadTooLarge(
                f"request body of {declared} bytes is over the limit of "
                f"{limits.max_body_bytes} bytes (limits.max_body_bytes)"
            )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise PayloadTooLarge(
                f"request body is over the limit of {limits.max_body_bytes} bytes "
                "(limits.max_body_bytes)"
            )
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        raise InvalidRequest("the request body is empty; send a JSON object")
    content_type = request.headers.get("content-type", "application/json")
    media = content_type.split(";")[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise InvalidRequest("content-type must be application/json")
    return decode_json(raw)
