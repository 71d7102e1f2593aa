"""Load a policy file: YAML → JSON Schema → semantic checks → frozen :class:`Policy`.

Every problem becomes an :class:`Issue` with file:line:col; any error refuses the whole file
(:class:`PolicyFileError`), so the gateway never runs half a policy. ``policy lint`` calls
:func:`check_policy_file` to see warnings as well.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gateway.detect.spec import (
    DenyListSpec,
    DetectionSpec,
    PatternSpec,
    RegexRecognizerSpec,
    Validator,
)
from gateway.policy._checks import semantic_issues
from gateway.policy._entities import known_entities
from gateway.policy._schema import load_schema, schema_issues
from gateway.policy._yaml import YamlDocument, parse_yaml, read_yaml_file
from gateway.policy.decision import Operation
from gateway.policy.errors import Issue, PolicyFileError, Severity
from gateway.policy.model import EntityCondition, Policy, Route, RouteKind, Rule, Then, When

__all__ = ["check_policy_file", "load_policy", "load_policy_text", "policy_version"]

_SCHEMA = "schema.json"


def policy_version(data: Any) -> str:
    """``sha256:<hex>`` of the RFC 8785 canonical JSON of the validated document."""
    import rfc8785

    return "sha256:" + hashlib.sha256(rfc8785.dumps(data)).hexdigest()


def load_policy(path: str | Path, *, entities: frozenset[str] | None = None) -> Policy:
    """Load and validate a policy file. Raises :class:`PolicyFileError` listing every error.

    ``entities``: the entity types detection knows (default: ``gateway.detect.KNOWN_ENTITIES``).
    """
    policy, issues = check_policy_file(path, entities=entities)
    return _accept(str(path), policy, issues)


def load_policy_text(
    text: str, *, file: str = "<policy>", entities: frozenset[str] | None = None
) -> Policy:
    """Like :func:`load_policy`, from a string (``file`` names it in messages)."""
    policy, issues = _check(parse_yaml(text, file), entities)
    return _accept(file, policy, issues)


def check_policy_file(
    path: str | Path, *, entities: frozenset[str] | None = None
) -> tuple[Policy | None, list[Issue]]:
    """Every issue in a policy file, warnings included, and the policy if it has no error.
    A file that cannot be read or parsed yields a single issue."""
    try:
        doc = read_yaml_file(Path(path))
    except PolicyFileError as exc:
        return None, list(exc.issues)
    return _check(doc, entities)


def _accept(file: str, policy: Policy | None, issues: list[Issue]) -> Policy:
    if policy is None:
        raise PolicyFileError(file, tuple(issues))
    return policy


def _check(doc: YamlDocument, entities: frozenset[str] | None) -> tuple[Policy | None, list[Issue]]:
    if not isinstance(doc.data, dict):
        got = "an empty file" if doc.data is None else f"a {type(doc.data).__name__}"
        msg = (
            f"expected a mapping with the keys version, name, defaults, routes and rules; got {got}"
        )
        return None, [doc.issue([], msg)]
    issues = schema_issues(doc, load_schema(_SCHEMA))
    if issues:
        return None, issues
    policy = _build(doc)
    known = entities if entities is not None else known_entities()
    issues = semantic_issues(doc, policy, known)
    if any(i.severity is Severity.ERROR for i in issues):
        return None, issues
    return policy, issues


def _globs(value: str | list[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return (value,) if isinstance(value, str) else tuple(value)


def _when(raw: dict[str, Any] | None) -> When:
    raw = raw or {}
    ent = raw.get("entities")
    header = raw.get("header")
    return When(
        entities=None
        if ent is None
        else EntityCondition(
            any=frozenset(ent.get("any", ())),
            all=frozenset(ent.get("all", ())),
            min_score=ent.get("min_score"),
        ),
        identity=_globs(raw.get("identity")),
        model=_globs(raw.get("model")),
        endpoint=_globs(raw.get("endpoint")),
        header=None
        if header is None
        else MappingProxyType({k.lower(): _globs(v) or () for k, v in header.items()}),
    )


def _then(raw: dict[str, Any]) -> Then:
    sanitize = {k: Operation(v) for k, v in raw.get("sanitize", {}).items()}
    default = sanitize.pop("default", None)
    deny = raw.get("deny")
    return Then(
        route=raw.get("route"),
        deny_message=None if deny is None else deny["message"],
        sanitize=MappingProxyType(sanitize),
        sanitize_default=default,
    )


def _detection(raw: dict[str, Any]) -> DetectionSpec:
    recognizers = tuple(
        RegexRecognizerSpec(
            name=r["name"],
            entity_type=r["entity"],
            patterns=tuple(
                PatternSpec(
                    name=p.get("name", f"{r['name']}_{i}"), regex=p["regex"], score=p["score"]
                )
                for i, p in enumerate(r["patterns"])
            ),
            context=tuple(r.get("context", ())),
            validator=Validator(r.get("validator", "none")),
        )
        for r in raw.get("recognizers", ())
    )
    deny_lists = tuple(
        DenyListSpec(name=d["name"], entity_type=d["entity"], terms=tuple(d["terms"]))
        for d in raw.get("deny_lists", ())
    )
    entities: tuple[str, ...] | None = None
    if "entities" in raw:
        # Custom recognizers always run: their types join the list the file names.
        custom = [s.entity_type for s in recognizers] + [d.entity_type for d in deny_lists]
        entities = tuple(dict.fromkeys([*raw["entities"], *custom]))
    return DetectionSpec(
        threshold=float(raw.get("threshold", DetectionSpec().threshold)),
        entities=entities,
        recognizers=recognizers,
        deny_lists=deny_lists,
        language=raw.get("language", "en"),
    )


def _build(doc: YamlDocument) -> Policy:
    """The typed policy from a schema-valid document (references not checked yet)."""
    data: dict[str, Any] = doc.data
    routes = {
        name: Route(
            name=name,
            kind=RouteKind(r["kind"]),
            upstream=r["upstream"],
            fallback=r.get("fallback"),
            allow_binary=r.get("binary", "refuse") == "allow",
        )
        for name, r in data["routes"].items()
    }
    rules = tuple(
        Rule(
            id=r["id"],
            when=_when(r.get("when")),
            then=_then(r["then"]),
            description=r.get("description", ""),
        )
        for r in data["rules"]
    )
    return Policy(
        name=data["name"],
        version=policy_version(data),
        source=doc.file,
        default_route=data["defaults"]["route"],
        on_error=data["defaults"]["on_error"],
        detection=_detection(data.get("detection", {})),
        routes=MappingProxyType(routes),
        rules=rules,
        description=data.get("description", ""),
    )
