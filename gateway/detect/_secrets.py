"""Secrets: cloud and API keys with a known prefix, PEM private keys, JWTs, bearer tokens and
passwords written after a password cue (prose, ``password=``, ``"password": "..."``, YAML, .env).

Placeholders (``$TOKEN``, ``${DB_PASSWORD}``, ``your-api-key``, ``os.environ[...]``, ``changeme``)
are not secrets and are never reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from gateway.detect._base import Candidate, is_placeholder

__all__ = ["find_secrets", "password_score"]

_R = "bastion-secrets"

_AWS = re.compile(
    r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}(?![A-Za-z0-9])"
)
_GITHUB = re.compile(
    r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{30,251}|github_pat_[A-Za-z0-9_]{22,255})(?![A-Za-z0-9_])"
)
_OPENAI = re.compile(r"(?<![A-Za-z0-9_-])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}")
_OTHER_KEYS = re.compile(
    r"(?<![A-Za-z0-9_-])(?:xox[abposr]-[A-Za-z0-9-]{10,}|sk_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|rk_live_[A-Za-z0-9]{16,}|AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20,}"
    r"|hf_[A-Za-z0-9]{30,}|npm_[A-Za-z0-9]{36})"
)
# PEM blocks, also inside JSON strings where newlines are written as the two characters "\n".
_PEM = re.compile(
    r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY( BLOCK)?-----[\s\S]{0,16384}?-----END \1PRIVATE KEY\2-----"
)
_PEM_OPEN = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?:\\[rn]|\s|[A-Za-z0-9+/=:,-])*"
)
_JWT = re.compile(r"(?<![\w-])eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
_BEARER = re.compile(r"\b(?:Bearer|Token|Basic)\s+([A-Za-z0-9\-._~+/]{16,}=*)", re.IGNORECASE)
_PASSWORD_CUE = re.compile(
    r"""(?:password|passwort|passwd|\bpwd\b|passcode|passphrase|pass\ phrase|palavra-passe|\bsenha\b
      |mot\ de\ passe|wachtwoord|contraseña|contrasena|\bclave\b|kennwort|parola\ d'ordine
      |\bpass\b|\bpw\b|db_pass)
      [\w-]*["']?            # PASSWORD_HASH, "password"
      \s*(?:\bis\b\s*|:=|=|:|\bist\b|\best\b|\bè\b|\bes\b|\bé\b)\s*
      (?P<value>"[^"\n]{1,200}"|'[^'\n]{1,200}'|[^\s"',;]{3,200})""",
    re.IGNORECASE | re.VERBOSE,
)
_TRAILING = ".,;:)]}>"


def find_secrets(text: str) -> Iterator[Candidate]:
    """Every secret in a normalized text."""
    for pattern, entity, score in (
        (_AWS, "AWS_ACCESS_KEY", 0.95),
        (_GITHUB, "GITHUB_TOKEN", 0.95),
        (_OPENAI, "OPENAI_API_KEY", 0.9),
        (_OTHER_KEYS, "CREDENTIAL", 0.9),
        (_JWT, "JWT", 0.95),
    ):
        for m in pattern.finditer(text):
            yield Candidate(entity, score, m.start(), m.end(), _R)
    closed_until = -1
    for m in _PEM.finditer(text):
        closed_until = m.end()
        yield Candidate("PRIVATE_KEY", 1.0, m.start(), m.end(), _R)
    for m in _PEM_OPEN.finditer(text):
        if m.start() >= closed_until:  # a key cut off before its END line
            yield Candidate("PRIVATE_KEY", 1.0, m.start(), m.end(), _R)
    for m in _BEARER.finditer(text):
        if not is_placeholder(m.group(1)):
            yield Candidate("CREDENTIAL", 0.8, m.start(1), m.end(1), _R)
    for m in _PASSWORD_CUE.finditer(text):
        start, end = m.span("value")
        value = m.group("value")
        if value[0] in "\"'":
            start, end, value = start + 1, end - 1, value[1:-1]
        else:
            while value and value[-1] in _TRAILING:
                value, end = value[:-1], end - 1
        score = password_score(value)
        if score > 0.0:
            yield Candidate("PASSWORD", score, start, end, _R)


def password_score(value: str) -> float:
    """How much a value after a password cue looks like a real password (0: not one)."""
    if len(value) < 4 or is_placeholder(value) or value.startswith(("-----BEGIN", "$", "%")):
        return 0.0
    classes = sum(
        (
            any(c.islower() for c in value),
            any(c.isupper() for c in value),
            any(c.isdigit() for c in value),
            any(not c.isalnum() for c in value),
        )
    )
    if classes >= 2 and len(value) >= 6:
        return 0.9
    return 0.6
