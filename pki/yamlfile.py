"""YAML files with positions: the one loader of the gateway config, policies and worker configs.

ruamel.yaml's round-trip loader keeps the position of every key and item; YAML 1.2 means ``yes``
and ``no`` stay strings; duplicate keys are errors. A :class:`YamlDocument` holds the plain copy
(dicts, lists, str, int, float, bool, None, dates) that gets validated and hashed, and the
round-trip tree that only answers "where is this?" (:meth:`YamlDocument.locate`), so every error
can say ``file:line:col``. :func:`validation_issues` turns a pydantic ``ValidationError`` over
``data`` into such positioned messages (an unknown key names the key and its section).

It lives in ``pki`` because ``pki`` is the one package both ``gateway`` and ``inference`` may
import (see DESIGN.md's boundaries); it imports nothing of either.

Exceptions::

    BastionError (pki.errors)
     └── YamlFileError        the file cannot be read, is not UTF-8, or is not valid YAML
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pki.errors import BastionError

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "PathPart",
    "YamlDocument",
    "YamlFileError",
    "YamlIssue",
    "format_path",
    "parse_yaml",
    "read_yaml_file",
    "validation_issues",
]

PathPart = str | int


class YamlFileError(BastionError):
    """A YAML file that cannot be read or parsed; ``line``/``col`` are 1-based."""

    def __init__(self, file: str, line: int, col: int, message: str) -> None:
        super().__init__(f"{file}:{line}:{col}: {message}")
        self.file = file
        self.line = line
        self.col = col
        self.message = message


@dataclass(frozen=True, slots=True)
class YamlIssue:
    """One positioned problem: ``file:line:col: message``; ``path`` is the dotted key path."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


def format_path(path: Sequence[PathPart]) -> str:
    """``("rules", 2, "then")`` → ``rules[2].then``; ``()`` → ``""``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """A parsed file: ``data`` is plain Python; :meth:`locate` maps a key path to (line, col)."""

    file: str
    data: Any
    _tree: Any

    def locate(self, path: Sequence[PathPart], *, key: bool = False) -> tuple[int, int]:
        """1-based (line, col) of the node at ``path`` (or of its deepest existing ancestor):
        the key itself when ``key`` is true or the node is a mapping/sequence (so
        "routes.openai" points at ``openai:``), else its value."""
        node = self._tree
        pos = (0, 0)
        for i, part in enumerate(path):
            last = i == len(path) - 1
            lc = getattr(node, "lc", None)
            try:
                if isinstance(part, int) and isinstance(node, list) and lc is not None:
                    pos = lc.item(part)
                    node = node[part]
                elif isinstance(part, str) and isinstance(node, dict) and lc is not None:
                    child = node[part]
                    container = isinstance(child, dict | list)
                    pos = lc.key(part) if (key and last) or container else lc.value(part)
                    node = child
                else:
                    break
            except (KeyError, IndexError, TypeError):
                break
        return pos[0] + 1, pos[1] + 1


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, datetime.date | datetime.datetime):
        # Kept as a date so a schema reports "expected a string" at the right place.
        return node
    return node


def parse_yaml(text: str, file: str) -> YamlDocument:
    """Parse one YAML document; a syntax error or a duplicate key raises :class:`YamlFileError`
    at its position."""
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import DuplicateKeyError
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    yaml = YAML(typ="rt", pure=True)
    yaml.allow_duplicate_keys = False
    try:
        tree = yaml.load(text)
    except DuplicateKeyError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        msg = f"{exc.problem}; a key may appear only once in a mapping, remove or rename one"
        raise YamlFileError(file, line, col, msg) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or type(exc).__name__
        raise YamlFileError(
            file, line, col, f"YAML error: {problem}; fix the YAML syntax there"
        ) from None
    except YAMLError as exc:
        raise YamlFileError(
            file, 1, 1, f"YAML error: {type(exc).__name__}; fix the YAML syntax"
        ) from None
    return YamlDocument(file=file, data=_plain(tree), _tree=tree)


def read_yaml_file(path: Path) -> YamlDocument:
    """Read and parse ``path``; an unreadable file or bad YAML raises :class:`YamlFileError`."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlFileError(
            file, 1, 1, f"cannot read the file: {exc.strerror}; check the path"
        ) from None
    except UnicodeDecodeError as exc:
        raise YamlFileError(
            file, 1, 1, f"not UTF-8 text (byte {exc.start}); save the file as UTF-8"
        ) from None
    return parse_yaml(text, file)


def validation_issues(document: YamlDocument, exc: ValidationError) -> list[YamlIssue]:
    """One positioned issue per pydantic error over ``document.data``: an unknown key points at
    the key and names its section; a missing key points at the section that lacks it."""
    issues = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = tuple(error["loc"])
        section = format_path(loc[:-1]) or "(top level)"
        if error["type"] == "extra_forbidden":
            message = f"unknown key '{loc[-1]}' at {section}; check the spelling"
        elif error["type"] == "missing":
            message = f"missing required key '{format_path(loc)}'"
        else:
            message = f"{format_path(loc) or '(top level)'}: {error['msg']}"
        line, col = document.locate(loc, key=True)
        issues.append(YamlIssue(document.file, line, col, format_path(loc), message))
    return issues
