"""The pii_dev corpus' rules for "is this value present in that text" (its README, ``match``).

Shared test helper: detection tests use it on sanitized bodies, the end-to-end gateway test on
what the loopback upstream received. Usage::

    corpus = load_corpus()                      # None when the corpus is absent
    present(value_entry, text)                  # any of the value's match entries found
    leaked = leaked_values(item, text, groups={"structured_id", "secret"})

``text`` is whatever is checked, typically ``json.dumps(body, ensure_ascii=False)`` of a request
body or the concatenation of its texts. JSON escaping matters for values with quotes, backslashes
or newlines (private keys): :func:`body_text` returns both the decoded texts and the raw JSON.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "CORPUS_PATH",
    "body_text",
    "leaked_values",
    "load_corpus",
    "normalize",
    "present",
]

CORPUS_PATH = Path(__file__).resolve().parents[3] / "shared" / "pii_dev" / "pii_dev.jsonl"

_IGNORABLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_SEP_DIGITS = r"[ \-./()]{0,3}"
_SEP_ALNUM = r"[ \-]{0,2}"


def load_corpus(path: Path = CORPUS_PATH) -> list[dict[str, Any]] | None:
    """The corpus items, or None when the file is absent. Lines are split on ``\\n`` only."""
    if not path.is_file():
        return None
    raw = path.read_text(encoding="utf-8")
    return [json.loads(line) for line in raw.split("\n") if line.strip()]


def normalize(text: str) -> str:
    """NFKC, then zero-width characters and soft hyphens removed."""
    return unicodedata.normalize("NFKC", text).translate(_IGNORABLE)


def body_text(body: Mapping[str, Any]) -> str:
    """Everything a body carries, as text: its decoded strings and its raw JSON."""
    strings = list(_strings(body))
    return "\n".join([*strings, json.dumps(body, ensure_ascii=False)])


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
        try:
            decoded = json.loads(value)
        except ValueError:
            return
        if isinstance(decoded, dict | list):
            yield from _strings(decoded)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _digits_regex(key: str) -> str:
    digits = [c for c in key if c.isdigit()]
    return r"(?<!\d)" + _SEP_DIGITS.join(digits) + r"(?!\d)"


def _match_one(entry: Mapping[str, Any], text: str) -> bool:
    kind = entry["type"]
    if kind == "all":
        return all(_match_one(part, text) for part in entry["parts"])
    key = normalize(str(entry.get("key", "")))
    if kind == "digits":
        return re.search(_digits_regex(key), text) is not None
    if kind == "phone":
        national = _digits_regex(key)[len(r"(?<!\d)") :]
        cc = str(entry.get("cc", "1"))
        prefix = rf"(?:(?:\+{cc}|00{cc}|{cc}|0){_SEP_DIGITS})?"
        return re.search(r"(?<!\d)" + prefix + national, text) is not None
    if kind == "alnum":
        chars = [c for c in key if c.isalnum()]
        pattern = r"(?<![^\W_])" + _SEP_ALNUM.join(re.escape(c) for c in chars) + r"(?![^\W_])"
        return re.search(pattern, text, re.IGNORECASE) is not None
    if kind == "text":
        words = key.split()
        pattern = r"(?<!\w)" + r"\s+".join(re.escape(w) for w in words) + r"(?!\w)"
        return re.search(pattern, text, re.IGNORECASE) is not None
    if kind == "email":
        local, _, domain = key.partition("@")
        at = r"(?:@|%40|\(at\)|\[at\]| at )"
        dot = r"(?:\.|\(dot\)|\[dot\]| dot )"
        labels = [re.escape(label) for label in domain.split(".")]
        pattern = re.escape(local) + at + dot.join(labels)
        return re.search(pattern, text, re.IGNORECASE) is not None
    if kind == "exact":
        if key.startswith("-----BEGIN") and "PRIVATE KEY" in key:
            lines = [ln for ln in key.split("\n") if len(ln) == 64]
            return any(line in text for line in lines) or key in text
        return key in text
    if kind == "ipv4":
        pattern = r"(?<![\d])(?<!\d\.)" + re.escape(key) + r"(?!\.?\d)"
        return re.search(pattern, text) is not None
    raise ValueError(f"unknown match type {kind!r}")


def present(value: Mapping[str, Any], text: str) -> bool:
    """Whether a corpus value (an entry of an item's ``sensitive``) is found in ``text``."""
    normalized = normalize(text)
    return any(_match_one(entry, normalized) for entry in value["match"])


def leaked_values(
    item: Mapping[str, Any], text: str, *, groups: Iterable[str] | None = None
) -> list[Mapping[str, Any]]:
    """The item's sensitive values (optionally only of ``groups``) still present in ``text``."""
    wanted = set(groups) if groups is not None else None
    return [
        value
        for value in item["sensitive"]
        if (wanted is None or value["group"] in wanted) and present(value, text)
    ]
