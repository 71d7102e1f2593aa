"""Globs for identities, model aliases, endpoints and header values.

One syntax everywhere: ``*`` matches any run of characters except ``/``, ``**`` any run including
``/``, ``?`` one character except ``/``; everything else is literal and case-sensitive. So
``spiffe://corp.example/billing/*`` matches ``.../billing/api`` but not ``.../billing/api/v2``,
and ``spiffe://corp.example/billing/**`` matches both.
"""

from __future__ import annotations

import functools
import re

__all__ = ["glob_match"]


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def glob_match(value: str, patterns: tuple[str, ...]) -> str | None:
    """The first pattern that matches the whole of ``value``, or None."""
    for pattern in patterns:
        if _compile(pattern).fullmatch(value):
            return pattern
    return None
