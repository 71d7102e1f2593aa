"""A policy file read by the shared YAML loader (:mod:`pki.yamlfile`, also used for the gateway
and worker configs), with the policy's own :class:`~gateway.policy.errors.Issue` for each problem.

The loader keeps the position of every key and item (YAML 1.2, duplicate keys refused); the plain
copy is what gets validated and hashed, the positions only answer "where is this?".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.policy.errors import Issue, PolicyFileError
from pki import yamlfile
from pki.yamlfile import PathPart, YamlFileError, format_path

__all__ = ["PathPart", "YamlDocument", "format_path", "parse_yaml", "read_yaml_file"]


@dataclass(frozen=True, slots=True)
class YamlDocument:
    """A parsed policy file: ``data`` is plain Python; :meth:`issue` places a problem."""

    parsed: yamlfile.YamlDocument

    @property
    def file(self) -> str:
        return self.parsed.file

    @property
    def data(self) -> Any:
        return self.parsed.data

    def locate(self, path: Sequence[PathPart], *, key: bool = False) -> tuple[int, int]:
        """1-based (line, col) of the node at ``path`` (see :meth:`pki.yamlfile.YamlDocument.locate`)."""
        return self.parsed.locate(path, key=key)

    def issue(self, path: Sequence[PathPart], message: str, *, key: bool = False) -> Issue:
        line, col = self.locate(path, key=key)
        return Issue(self.file, line, col, format_path(path), message)


def _refused(exc: YamlFileError) -> PolicyFileError:
    return PolicyFileError(exc.file, (Issue(exc.file, exc.line, exc.col, "", exc.message),))


def parse_yaml(text: str, file: str) -> YamlDocument:
    """Parse one YAML document. Raises ``PolicyFileError`` on a syntax error or
    a duplicate key."""
    try:
        return YamlDocument(yamlfile.parse_yaml(text, file))
    except YamlFileError as exc:
        raise _refused(exc) from None


def read_yaml_file(path: Path) -> YamlDocument:
    """Read and parse ``path``; unreadable files and YAML errors raise ``PolicyFileError``."""
    try:
        return YamlDocument(yamlfile.read_yaml_file(path))
    except YamlFileError as exc:
        raise _refused(exc) from None
