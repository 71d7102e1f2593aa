"""The policy package's exception tree, and ``Issue``: one finding about a policy file.

    BastionError                     (pki.errors) root of every error Bastion raises on purpose
     └── PolicyError                 the policy engine, its files and its tools
          ├── PolicyFileError        a policy or policy-test file that cannot be read, parsed or
          │                          validated; ``issues`` lists every problem with file:line:col
          └── PolicyTestError        ``bastion policy test`` could not run a case (detection failed)

YAML, JSON Schema and ``re`` errors are translated at the boundary (``gateway.policy._yaml`` and
``gateway.policy.loader``) into ``Issue`` values; nothing outside this tree escapes the loader.
Messages name the file, line, column and key path, and say what was expected. They never carry
prompt text: a policy file holds rules, not requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pki.errors import BastionError

__all__ = ["Issue", "PolicyError", "PolicyFileError", "PolicyTestError", "Severity"]


class Severity(StrEnum):
    ERROR = "error"  # the policy is refused (by the loader, the gateway and ``policy lint``)
    WARNING = "warning"  # shown by ``policy lint``; the policy still loads


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem in a file: where (1-based line and column), which key, and what was expected."""

    file: str
    line: int
    col: int
    path: str  # key path, e.g. ``rules[2].then.sanitize``; "" for the document itself
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.col}: {self.severity}: {where}{self.message}"


class PolicyError(BastionError):
    """Root of the policy package's errors."""


class PolicyFileError(PolicyError):
    """A policy (or policy-test) file was refused; ``issues`` holds every problem found."""

    def __init__(self, file: str, issues: tuple[Issue, ...]) -> None:
        self.file = file
        self.issues = issues
        errors = [i for i in issues if i.severity is Severity.ERROR] or list(issues)
        head = f"{file}: refused with {len(errors)} error(s)"
        super().__init__(head + "\n" + "\n".join(str(i) for i in errors))


class PolicyTestError(PolicyError):
    """A policy test case could not be run (as opposed to a case that ran and failed)."""
