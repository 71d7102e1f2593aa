"""Validation errors of the typed request models (:mod:`gateway.api.schemas`) as 400s that name
the field (``param``) and never echo its value: a caller's own mapping key or unknown field name
is shown only when it looks like an API field name, else as ``?``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from gateway.api.schemas import schema_vocabulary
from gateway.errors import InvalidRequest

__all__ = ["parse_body"]

_TAG_STEP = re.compile(r"^(role|type)=")
_SAFE_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_UNION_LABEL = re.compile(r"[\[(]")
_TYPE_LABELS = frozenset({"str", "int", "float", "bool", "none", "list", "dict", "constrained-str"})


def _param(loc: Sequence[int | str]) -> str:
    """The error's field path; a caller's own mapping key or unknown field name is shown only
    when it looks like an API field name (lowercase snake case), else as ``?``."""
    vocabulary = schema_vocabulary()
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        if _TAG_STEP.match(part):
            continue  # a discriminator tag, not a field
        if part not in vocabulary and (_UNION_LABEL.search(part) or part in _TYPE_LABELS):
            continue  # pydantic's label for a union member ("str", "list[...]"), not a field
        shown = part if part in vocabulary or _SAFE_KEY.match(part) else "?"
        out += f".{shown}" if out else shown
    return out


def _message(kind: str, param: str, error: Any) -> str:
    if kind == "extra_forbidden":
        return (
            f"unknown field '{param}': the API does not define it; remove it (an operator may "
            "allow a top-level field as text in limits.passthrough_fields)"
        )
    if kind == "missing":
        return f"missing required field '{param}'"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        expected = error.get("ctx", {}).get("expected_tags", "")
        expected = ", ".join(
            t.split("=", 1)[-1] for t in str(expected).replace("'", "").split(", ")
        )
        return f"invalid value for '{param}': it must be one of: {expected}"
    # pydantic's own messages state the expected type or bound, not the input.
    return f"invalid value for '{param}': {error['msg']}"


M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], body: Any) -> M:
    """Validate a decoded JSON body; raise :class:`InvalidRequest` naming the first bad field."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False, include_context=True)
        # The deepest error is the most specific (a union reports one per member).
        first = max(errors, key=lambda e: len(e["loc"]))
        param = _param(tuple(first["loc"]))
        if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
            tags = str(first.get("ctx", {}).get("expected_tags", "")).replace("'", "")
            key = tags.split("=", 1)[0].strip()
            param = f"{param}.{key}" if param and key else key or param
        raise InvalidRequest(
            _message(first["type"], param, first), param=param or None, code="invalid_field"
        ) from None
