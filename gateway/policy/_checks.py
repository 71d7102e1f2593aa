"""Semantic checks the schema cannot express: references, reachability, entity types.

Errors refuse the policy everywhere (loader, gateway hot reload, ``policy lint``); warnings are
shown by ``policy lint`` only. Positions come from the YAML document the policy was built from:
``policy.rules[i]`` is ``rules[i]`` in the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from gateway.policy._yaml import PathPart, YamlDocument
from gateway.policy.errors import Issue, Severity
from gateway.policy.model import ANY_ENTITY, DENY, Policy, RouteKind, When

__all__ = ["semantic_issues", "subsumes"]

_UNIVERSAL_GLOB = "**"


def semantic_issues(doc: YamlDocument, policy: Policy, known: frozenset[str]) -> list[Issue]:
    issues: list[Issue] = []
    data: dict[str, Any] = doc.data

    def err(path: list[PathPart], msg: str, *, key: bool = False) -> None:
        issues.append(doc.issue(path, msg, key=key))

    def warn(path: list[PathPart], msg: str, *, key: bool = False) -> None:
        i = doc.issue(path, msg, key=key)
        issues.append(Issue(i.file, i.line, i.col, i.path, i.message, Severity.WARNING))

    routes = policy.routes
    defined = ", ".join(sorted(routes))
    onprem = sorted(n for n, r in routes.items() if r.kind is RouteKind.ONPREM)

    def route_ref(path: list[PathPart], name: str) -> bool:
        if name in routes:
            return True
        err(path, f"route '{name}' is not defined; defined routes: {defined}")
        return False

    # defaults
    route_ref(["defaults", "route"], policy.default_route)
    if policy.on_error != DENY:
        r = routes.get(policy.on_error)
        if r is None or r.kind is not RouteKind.ONPREM:
            what = "not defined" if r is None else "a managed route"
            err(
                ["defaults", "on_error"],
                f"'{policy.on_error}' is {what}; expected 'deny' or an on-prem route "
                f"({', '.join(onprem) or 'none defined'})",
            )

    # routes
    for name, r in routes.items():
        if r.allow_binary:
            where: list[PathPart] = ["routes", name, "binary"]
            if r.kind is RouteKind.ONPREM:
                warn(where, "binary: applies to managed routes only (on-prem takes every part)")
            else:
                warn(
                    where,
                    f"route '{name}' sends image, audio and file parts to a managed API "
                    "unscanned (binary: allow)",
                )
        if r.fallback is None:
            continue
        path: list[PathPart] = ["routes", name, "fallback"]
        if r.kind is RouteKind.ONPREM:
            err(path, "only managed routes fall back; an on-prem failure never goes elsewhere")
        elif route_ref(path, r.fallback) and routes[r.fallback].kind is not RouteKind.ONPREM:
            err(path, f"fallback '{r.fallback}' is a managed route; expected an on-prem route")
    used = {policy.default_route, policy.on_error} | {
        r.fallback for r in routes.values() if r.fallback
    }
    used |= {rule.then.route for rule in policy.rules if rule.then.route}
    for name in routes:
        if name not in used:
            warn(["routes", name], f"route '{name}' is never used", key=True)

    # detection
    det = data.get("detection", {})
    spec = policy.detection
    custom = {s.entity_type for s in spec.recognizers} | {d.entity_type for d in spec.deny_lists}
    for i, name in enumerate(det.get("entities", ())):
        if name not in known and name not in custom:
            err(["detection", "entities", i], _unknown_entity(name, known))
    enabled = (known if spec.entities is None else frozenset(spec.entities)) | custom
    _unique_names(det.get("recognizers", ()), ["detection", "recognizers"], err)
    _unique_names(det.get("deny_lists", ()), ["detection", "deny_lists"], err)
    for i, rec in enumerate(spec.recognizers):
        for j, pattern in enumerate(rec.patterns):
            try:
                re.compile(pattern.regex)
            except re.error as exc:
                err(
                    ["detection", "recognizers", i, "patterns", j, "regex"],
                    f"regular expression does not compile: {exc.msg} at position {exc.pos}",
                )

    # rules
    first_id: dict[str, int] = {}
    for i, rule in enumerate(policy.rules):
        base: list[PathPart] = ["rules", i]
        if rule.id in first_id:
            line, _ = doc.locate(["rules", first_id[rule.id], "id"])
            err([*base, "id"], f"duplicate rule id '{rule.id}' (first used on line {line})")
        else:
            first_id[rule.id] = i
        t = rule.then
        raw_then = data["rules"][i]["then"]
        if t.deny_message is not None and (t.route is not None or "sanitize" in raw_then):
            err([*base, "then"], "'deny' cannot be combined with 'route' or 'sanitize'", key=True)
        elif t.deny_message is None and t.route is None:
            err([*base, "then"], "expected 'route: NAME' or 'deny: {message: ...}'", key=True)
        elif (
            t.route is not None
            and route_ref([*base, "then", "route"], t.route)
            and "sanitize" in raw_then
            and routes[t.route].kind is not RouteKind.MANAGED
        ):
            err(
                [*base, "then", "sanitize"],
                f"sanitize applies to managed routes only; route '{t.route}' is on-prem "
                "(drop 'sanitize', or route to a managed route)",
                key=True,
            )
        for key in raw_then.get("sanitize", {}):
            if key != "default" and key not in known and key not in custom:
                err([*base, "then", "sanitize", key], _unknown_entity(key, known), key=True)
        raw_ent = (data["rules"][i].get("when") or {}).get("entities") or {}
        for mode in ("any", "all"):
            for j, name in enumerate(raw_ent.get(mode, ())):
                p: list[PathPart] = [*base, "when", "entities", mode, j]
                if name == ANY_ENTITY:
                    if mode == "all":
                        err(p, "'*' means any type and belongs under 'any', not 'all'")
                elif name not in known and name not in custom:
                    err(p, _unknown_entity(name, known))
                elif name not in enabled:
                    err(
                        p,
                        f"'{name}' is not in detection.entities, so it is never found and this "
                        "condition never holds; add it to detection.entities",
                    )
        ms = rule.when.entities.min_score if rule.when.entities else None
        if ms is not None and ms < spec.threshold:
            warn(
                [*base, "when", "entities", "min_score"],
                f"min_score {ms} is below detection.threshold {spec.threshold} and has no effect "
                "(findings below the threshold are always ignored)",
            )
        for k in range(i):
            earlier = policy.rules[k]
            if subsumes(earlier.when, rule.when):
                why = (
                    "matches every request"
                    if earlier.when.is_catch_all
                    else "matches every request this rule matches"
                )
                err(
                    [*base, "id"],
                    f"rule '{rule.id}' is unreachable: earlier rule '{earlier.id}' {why} "
                    "(first match wins); reorder or remove it",
                )
                break
    issues.sort(key=lambda x: (x.line, x.col, x.message))
    return issues


def _unknown_entity(name: str, known: Iterable[str]) -> str:
    import difflib

    near = difflib.get_close_matches(name, sorted(known), n=1)
    hint = f" did you mean '{near[0]}'?" if near else ""
    return (
        f"unknown entity type '{name}';{hint} expected a type detection knows or one a "
        "custom recognizer or deny-list defines"
    )


def _unique_names(items: Iterable[dict[str, Any]], base: list[PathPart], err: Any) -> None:
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item["name"] in seen:
            err([*base, i, "name"], f"duplicate name '{item['name']}'")
        seen.add(item["name"])


def _globs_cover(earlier: tuple[str, ...] | None, later: tuple[str, ...] | None) -> bool:
    """Whether the earlier glob condition holds whenever the later one does (conservatively)."""
    if earlier is None:
        return True
    if later is None:
        return _UNIVERSAL_GLOB in earlier
    return _UNIVERSAL_GLOB in earlier or set(later) <= set(earlier)


def subsumes(earlier: When, later: When) -> bool:
    """True when ``earlier`` provably matches every request ``later`` matches, so a rule with
    ``later`` placed after it can never win. Conservative: False when unsure."""
    if not (
        _globs_cover(earlier.identity, later.identity)
        and _globs_cover(earlier.model, later.model)
        and _globs_cover(earlier.endpoint, later.endpoint)
    ):
        return False
    for name, globs in (earlier.header or {}).items():
        later_globs = (later.header or {}).get(name)
        # A header condition never holds when the header is absent, "**" included.
        if later_globs is None or not _globs_cover(globs, later_globs):
            return False
    e, l_ = earlier.entities, later.entities
    if e is None:
        return True
    if l_ is None:
        return False
    if (e.min_score or 0.0) > (l_.min_score or 0.0):
        return False
    if not e.all <= l_.all:
        return False
    if not e.any:
        return True
    if e.any & l_.all:
        return True
    later_any = l_.any
    if ANY_ENTITY in e.any:
        return bool(later_any or l_.all)
    return bool(later_any) and ANY_ENTITY not in later_any and later_any <= e.any
