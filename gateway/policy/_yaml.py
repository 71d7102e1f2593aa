"""Read a YAML file into plain data plus a map back to line/column, for error messages.

ruamel.yaml's round-trip loader keeps the position of every key and item; YAML 1.2 means ``yes``
and ``no`` stay strings; duplicate keys are errors. The plain copy (dicts, lists, str, int, float,
bool, None) is what gets validated and hashed; the round-trip tree only answers "where is this?".
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.policy.errors import Issue, PolicyFileError

__all__ = ["YamlDocument", "format_path", "parse_yaml", "read_yaml_file"]

PathPart = str | int


def format_path(path: Sequence[PathPart]) -> str:
    """``("rules", 2, "then")`` → ``rules[2].then``."""
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
        """1-based (line, col) of the node at ``path``: the key itself when ``key`` is true or the
        node is a mapping/sequence (so "routes.openai" points at ``openai:``), else its value."""
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

    def issue(self, path: Sequence[PathPart], message: str, *, key: bool = False) -> Issue:
        line, col = self.locate(path, key=key)
        return Issue(self.file, line, col, format_path(path), message)


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
        # Kept as a date so the schema reports "expected a string" at the right place.
        return node
    return node


def parse_yaml(text: str, file: str) -> YamlDocument:
    """Parse one YAML document. Raises ``PolicyFileError`` on a syntax error or
    a duplicate key."""
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
        raise PolicyFileError(file, (Issue(file, line, col, "", msg),)) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or type(exc).__name__
        raise PolicyFileError(
            file, (Issue(file, line, col, "", f"YAML error: {problem}; fix the YAML syntax there"),)
        ) from None
    except YAMLError as exc:
        raise PolicyFileError(
            file, (Issue(file, 1, 1, "", f"YAML error: {type(exc).__name__}; fix the YAML syntax"),)
        ) from None
    return YamlDocument(file=file, data=_plain(tree), _tree=tree)


def read_yaml_file(path: Path) -> YamlDocument:
    """Read and parse ``path``; unreadable files and YAML errors raise ``PolicyFileError``."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyFileError(
            file, (Issue(file, 1, 1, "", f"cannot read the file: {exc.strerror}; check the path"),)
        ) from None
    except UnicodeDecodeError as exc:
        raise PolicyFileError(
            file,
            (Issue(file, 1, 1, "", f"not UTF-8 text (byte {exc.start}); save the file as UTF-8"),),
        ) from None
    return parse_yaml(text, file)
