"""JSON Schema validation with errors mapped back to file:line:col and stated for people.

jsonschema's own messages (``'santize' was unexpected``) are rewritten into what happened and what
was expected, and each points at the offending key or value in the YAML file.
"""

from __future__ import annotations

import difflib
import functools
import json
from importlib import resources
from typing import Any

from gateway.policy._yaml import PathPart, YamlDocument
from gateway.policy.errors import Issue

__all__ = ["load_schema", "schema_issues"]

_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "true or false",
    "null": "nothing (null)",
}
_PATTERN_HINTS = {
    "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$": (
        "a name of letters, digits, '_', '.' or '-' (starting with a letter or digit, "
        "at most 64 characters)"
    ),
    "^[A-Z][A-Z0-9_]*$": "an entity type in UPPER_SNAKE_CASE, e.g. US_SSN",
    "^(\\*|[A-Z][A-Z0-9_]*)$": "an entity type in UPPER_SNAKE_CASE, e.g. US_SSN, or '*'",
    "^(default|[A-Z][A-Z0-9_]*)$": "an entity type in UPPER_SNAKE_CASE, or 'default'",
    "^[A-Za-z0-9][A-Za-z0-9-]*$": "an HTTP header name, e.g. x-tenant",
}


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """A JSON Schema shipped inside this package (``schema.json``, ``tests.schema.json``)."""
    text = resources.files("gateway.policy").joinpath(name).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _type_of(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"string {_short(value)}"
    if isinstance(value, int | float):
        return f"number {value}"
    return type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _expected_type(t: Any) -> str:
    if isinstance(t, list):
        return " or ".join(_TYPE_NAMES.get(str(x), str(x)) for x in t)
    return _TYPE_NAMES.get(t, str(t))


def _allowed_keys(schema: dict[str, Any]) -> list[str]:
    return sorted(schema.get("properties", {}))


def schema_issues(doc: YamlDocument, schema: dict[str, Any]) -> list[Issue]:
    """Every schema violation in ``doc``, as issues sorted by position."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema)
    issues: list[Issue] = []
    for err in validator.iter_errors(doc.data):
        path: list[PathPart] = list(err.absolute_path)
        kind = err.validator
        sch = err.schema if isinstance(err.schema, dict) else {}
        if kind == "additionalProperties" and isinstance(err.instance, dict):
            allowed = _allowed_keys(sch)
            extra = [k for k in err.instance if k not in sch.get("properties", {})]
            for key in extra:
                near = difflib.get_close_matches(key, allowed, n=1)
                hint = f"did you mean '{near[0]}'? " if near else ""
                msg = f"unknown key '{key}': {hint}expected one of: {', '.join(allowed)}"
                issues.append(doc.issue([*path, key], msg, key=True))
            continue
        if kind == "propertyNames":
            key = str(err.instance)
            pattern = err.validator_value.get("pattern", "") if err.validator_value else ""
            want = _PATTERN_HINTS.get(pattern, f"a key matching {pattern}")
            issues.append(doc.issue([*path, key], f"bad key '{key}': expected {want}", key=True))
            continue
        if kind == "required":
            missing = [k for k in err.validator_value if k not in err.instance]
            for key in missing:
                issues.append(doc.issue(path, f"missing required key '{key}'", key=True))
            continue
        if kind == "type":
            msg = f"expected {_expected_type(err.validator_value)}, got {_type_of(err.instance)}"
        elif kind == "const":
            msg = f"expected {err.validator_value!r}, got {_type_of(err.instance)}"
        elif kind == "enum":
            choices = ", ".join(str(c) for c in err.validator_value)
            msg = f"expected one of: {choices}; got {_type_of(err.instance)}"
        elif kind == "pattern":
            want = _PATTERN_HINTS.get(
                err.validator_value, f"a value matching {err.validator_value}"
            )
            msg = f"expected {want}, got {_type_of(err.instance)}"
        elif kind in ("minItems", "minProperties", "minLength"):
            msg = "must not be empty"
        elif kind in ("minimum", "maximum"):
            lo, hi = sch.get("minimum"), sch.get("maximum")
            msg = f"expected a number between {lo} and {hi}, got {err.instance}"
        elif kind == "uniqueItems":
            msg = "lists the same item twice; remove the duplicate"
        elif kind == "anyOf" and _is_globs(sch):
            msg = f"expected a glob string or a list of glob strings, got {_type_of(err.instance)}"
        else:
            msg = err.message
        issues.append(doc.issue(path, msg))
    issues.sort(key=lambda i: (i.line, i.col, i.path, i.message))
    return issues


def _is_globs(schema: dict[str, Any]) -> bool:
    options = schema.get("anyOf")
    return isinstance(options, list) and [o.get("type") for o in options] == ["string", "array"]
