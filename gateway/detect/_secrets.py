"""Secrets: cloud and API keys with a known prefix, PEM private keys, JWTs, bearer tokens,
passwords written after a password cue (prose in several languages, ``the pw for the db is …``,
``password=``, ``"password": "..."``, YAML, .env, ``login: user / pass``), tokened webhook URLs
(Slack, Discord, Teams, Telegram, any ``…/hooks/<token>``), secret query parameters (``token=``,
``key=``, ``sig=``, ``X-Amz-Signature=``) and URL userinfo (``postgres://user:pass@host``).

Placeholders (``$TOKEN``, ``${DB_PASSWORD}``, ``your-api-key``, ``os.environ[...]``, ``changeme``)
are not secrets and are never reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from gateway.detect._base import Candidate, is_placeholder
from gateway.detect._normalize import fold_confusables

__all__ = ["find_secrets", "password_score"]

_R = "bastion-secrets"

_AWS = re.compile(
    r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}(?![A-Za-z0-9])"
)
# The same key ids as an attacker writes them (red team of issue 13): any case, glued to letters
# (``keyakiaz3mx…end``), in groups (``AKIA Z3MX Q7V4 WLBN 2TQE``), with Cyrillic or Greek
# look-alike letters (folded before matching). AWS writes the 16 characters after the prefix in
# base32 (A-Z, 2-7); without the strict pattern's boundaries the body must be base32 and hold a
# digit, so that prose ("Asia Pacific region…") is not a key.
_AWS_PREFIX = r"(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)"
_AWS_GLUED = re.compile(rf"{_AWS_PREFIX}(?=[A-Z2-7]{{0,15}}[2-7])[A-Z2-7]{{16}}", re.IGNORECASE)
_AWS_GROUPED = re.compile(
    rf"(?<![A-Za-z0-9]){_AWS_PREFIX}(?P<groups>(?:[ .:/-]{{1,3}}[A-Z2-7]{{1,8}}){{2,16}})",
    re.IGNORECASE,
)
_AWS_BASE32 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
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
# Words that announce a password, in the languages the gateway sees (and a few more); the ASCII
# spellings are there because key recognizers see accents folded ("lösenord" as "losenord").
_CUE_WORDS = r"""(?:password|passwort|passwd|\bpwd\b|passcode|passphrase|pass\ phrase|palavra-passe
      |\bsenha\b|mot\ de\ passe|wachtwoord|contraseña|contrasena|\bclave\b|kennwort
      |parola\ d'ordine|\bparola\b|\bpass\b|\bpw\b|db_pass|hasło|haslo|\bheslo\b|salasana
      |lösenord|losenord|adgangskode|\bpassord\b|jelszó|jelszo|şifre|sifre|\bparol\b|пароль
      |密码|口令|パスワード|비밀번호)"""
# Words that may separate the cue from the value: "is", "was", "lautet", "est", "är", ...
_CUE_VERBS = r"""(?:\bis\s+set\s+to\b|\bis\s+now\b|\bis\b|\bwas\b|\bare\b|\bist\b|\blautet\b
      |\best\b|\bè\b|\bes\b|\bé\b|\bär\b|\bar\b|\bjest\b|\ber\b|\bwill\s+be\b)"""
# "the pw for the db is X", "the password of the admin account is X": up to two short phrases.
_CUE_QUALIFIER = r"""(?:\s+(?:for|of|to|on|at|in|für|de|du|del|di|da|do|van|voor)\s+
      (?:(?:the|my|our|this|that|your|his|her|their|le|la|der|die|das|el|il|o|a)\s+)?
      [\w.@:/-]{1,60}(?:\s+(?:account|user|server|box|db|database|login|host|vm|instance|wifi))?){0,2}"""
# The first letters of the cue words, as a lookahead: lets the regex engine skip most positions
# of a long text at once (about 3x faster than trying the alternation everywhere).
_CUE_FIRST = "(?=[pPsScCkKwWmMhHjJdDlLaAşŞпП密口パ비])"
_PASSWORD_CUE = re.compile(
    rf"""{_CUE_FIRST}{_CUE_WORDS}
      [\w-]*["']?                      # PASSWORD_HASH, "password"
      {_CUE_QUALIFIER}
      (?:'s)?
      \s*(?P<sep>{_CUE_VERBS}\s*(?::\s*)?|:=|=|:|：)\s*
      (?P<value>"[^"\n]{{1,200}}"|'[^'\n]{{1,200}}'|[^\s"',;]{{3,200}})""",
    re.IGNORECASE | re.VERBOSE,
)
# "log in with password Tr0ub4dor&3x": no separator, so only a strong cue and a strong value.
_PASSWORD_BARE = re.compile(
    r"""(?:password|passwort|passwd|passphrase|passcode|kennwort|contraseña|mot\ de\ passe)
      \s+(?P<value>(?=[^\s"',;]*\d)(?=[^\s"',;]*[A-Za-z])[^\s"',;()]{8,200})(?=[\s.,;!?)]|$)""",
    re.IGNORECASE | re.VERBOSE,
)
# "login: jsmith / Gr33n!Tea", "credentials are ops_bot / s3cr3t-K3y-77", "Login: admin:Pa55w0rd!9"
_LOGIN_PAIR = re.compile(
    r"""(?<![\w-])(?:log-?in|sign-?in|credentials|creds|user\s*/\s*pass(?:word)?)
      (?:\s+(?:details|info))?\s*(?:\bis\b|\bare\b|:|=)\s*
      (?P<user>[^\s/:@"',;]{1,64})(?:\s*/\s*|:|\s+(?:and|with)\s+(?:password\s+|pw\s+)?)
      (?P<value>[^\s"',;]{4,200})""",
    re.IGNORECASE | re.VERBOSE,
)
# Webhook URLs carry their token in the path: whoever holds the URL can post.
_WEBHOOK = re.compile(
    r"""https?://(?:
        hooks\.slack\.com/(?:services|workflows|triggers)/(?P<slack>[A-Za-z0-9_/-]{20,300})
      | (?:[\w-]+\.)?discord(?:app)?\.com/api/webhooks/(?P<discord>\d{5,30}/[\w-]{20,300})
      | [\w-]+\.webhook\.office\.com/webhookb2/(?P<teams>[^\s/]+/IncomingWebhook/[\w-]{16,}/[\w-]{4,})
      | api\.telegram\.org/bot(?P<telegram>\d{5,}:[\w-]{30,})
      | [\w.-]+/(?:[\w.%-]+/)*?(?:hooks?|webhooks?)/(?:[\w.%-]+/)*?(?P<generic>(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[\w-]{24,300})
    )""",
    re.IGNORECASE | re.VERBOSE,
)
# Secret-bearing query parameters: ?token=…, &key=…, &sig=…, X-Amz-Signature=…
_QUERY_SECRET = re.compile(
    r"""[?&;](?P<key>(?:access_|auth_|api_|id_|refresh_|session_|client_|x-amz-|x-goog-|sv-)?
      (?:token|key|apikey|api-key|sig|signature|secret|password|passwd|pwd|auth|credential
      |security-token))=(?P<value>[^\s&#"'<>]{1,2000})""",
    re.IGNORECASE | re.VERBOSE,
)
# URL userinfo: scheme://user:password@host (databases, brokers, git remotes).
_USERINFO = re.compile(
    r"(?<![\w+.-])[a-z][a-z0-9+.-]{1,20}://(?P<user>[^\s:/?#@\[\]\"'<>]{0,128})"
    r":(?P<value>[^\s/?#@\[\]\"']{1,256})@(?=[\w\[])",
    re.IGNORECASE,
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
    yield from _aws_variants(text)
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
        score = 0.0 if is_placeholder(m.group("value")) else password_score(value)
        if m.group("sep")[:1].isalpha() and m.group("value")[0] not in "\"'" and value.isalpha():
            # "the password is required", "passwords are stored hashed": prose, unless the
            # word after the verb is more than a plain word.
            score = min(score, 0.4) if value.islower() or value.istitle() else score
        if score > 0.0:
            yield Candidate("PASSWORD", score, start, end, _R)
    for m in _PASSWORD_BARE.finditer(text):
        value = m.group("value")
        if password_score(value) >= 0.9 and _classes(value) >= 3:
            yield Candidate("PASSWORD", 0.8, m.start("value"), m.end("value"), _R)
    for m in _LOGIN_PAIR.finditer(text):
        start, end = m.span("value")
        value = m.group("value")
        while value and value[-1] in _TRAILING:
            value, end = value[:-1], end - 1
        if _classes(value) >= 2 and password_score(value) > 0.0:
            yield Candidate("PASSWORD", 0.85, start, end, _R)
    for m in _WEBHOOK.finditer(text):
        group = next(g for g in ("slack", "discord", "teams", "telegram", "generic") if m.group(g))
        start, end = m.span(group)
        while end > start and text[end - 1] in _TRAILING + "/":
            end -= 1
        yield Candidate("CREDENTIAL", 0.8 if group == "generic" else 0.95, start, end, _R)
    for m in _QUERY_SECRET.finditer(text):
        start, end = m.span("value")
        value = m.group("value")
        while value and value[-1] in _TRAILING:
            value, end = value[:-1], end - 1
        if _token_like(value):
            yield Candidate("CREDENTIAL", 0.85, start, end, _R)
    for m in _USERINFO.finditer(text):
        value = m.group("value")
        if value != m.group("user") and not is_placeholder(value):
            yield Candidate("CREDENTIAL", 0.9, m.start("value"), m.end("value"), _R)


def _aws_variants(text: str) -> Iterator[Candidate]:
    """AWS key ids in any case, glued, grouped or with look-alike letters (see ``_AWS_GLUED``)."""
    view = fold_confusables(text)
    for m in _AWS_GLUED.finditer(view):
        yield Candidate("AWS_ACCESS_KEY", 0.95, m.start(), m.end(), _R)
    for m in _AWS_GROUPED.finditer(view):
        body: list[int] = []  # offsets of the body's characters, separators left out
        lengths: list[int] = []
        for part in re.finditer(r"[A-Za-z0-9]+", m.group("groups")):
            lengths.append(len(part.group()))
            body.extend(range(m.start("groups") + part.start(), m.start("groups") + part.end()))
        if len(body) < 16 or len(lengths) < 2:
            continue
        chars = "".join(view[i] for i in body[:16])
        upper = chars.upper()
        regular = len(set(lengths[:-1])) == 1 and lengths[0] >= 2  # "Z3MX Q7V4 WLBN 2TQE"
        if (
            set(upper) <= _AWS_BASE32
            and any(c.isdigit() for c in upper)
            and (regular or (chars.isupper() and m.group()[:4].isupper()))
        ):
            yield Candidate("AWS_ACCESS_KEY", 0.95, m.start(), body[15] + 1, _R)


def _classes(value: str) -> int:
    return sum(
        (
            any(c.islower() for c in value),
            any(c.isupper() for c in value),
            any(c.isdigit() for c in value),
            any(not c.isalnum() for c in value),
        )
    )


def _token_like(value: str) -> bool:
    """A query value that looks like a generated token, not a word or a setting."""
    return (
        len(value) >= 12
        and not is_placeholder(value)
        and any(c.isdigit() for c in value)
        and any(c.isalpha() for c in value)
        and not value.replace("-", "").replace("_", "").isalpha()
    )


def password_score(value: str) -> float:
    """How much a value after a password cue looks like a real password (0: not one).

    A value that starts with ``$`` or ``%`` is a password like any other unless it is a
    placeholder (``$DB_PASSWORD``, ``${DB_PASSWORD}``, ``%(password)s``, ``%DB_PASSWORD%``)."""
    if len(value) < 4 or is_placeholder(value) or value.startswith("-----BEGIN"):
        return 0.0
    if _classes(value) >= 2 and len(value) >= 6:
        return 0.9
    return 0.6
