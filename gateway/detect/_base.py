"""Shared pieces of Bastion's own recognizers: the candidate type, context words, validators.

Recognizers run on the normalized text (see ``_normalize``) and return ``Candidate`` spans in it;
the detector maps them back to the original text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "CONTEXT_WINDOW",
    "CONTEXT_WORDS",
    "Candidate",
    "is_placeholder",
    "luhn_ok",
    "mod97_ok",
    "nearest_context",
    "ssn_ok",
]

CONTEXT_WINDOW = 48  # characters before a value searched for context words


@dataclass(frozen=True, slots=True)
class Candidate:
    """A span ``[start, end)`` of the normalized text that a recognizer believes is an entity."""

    entity_type: str
    score: float
    start: int
    end: int
    recognizer: str


# Context words, per entity type, in the languages the gateway sees (en, de, fr, es, it, pt, nl).
CONTEXT_WORDS: dict[str, str] = {
    "US_SSN": r"\bssn\b|social[ _-]?security|sozialversicherungs",
    "MEDICAL_RECORD_NUMBER": (
        r"\bmrn\b|medical[ _-]?record|patient[ _-]?(?:id|no|num|number)\b|\bchart\b|krankenakte"
        r"|patientennummer|dossier m[ée]dical|cartella clinica|prontu[áa]rio|historia cl[íi]nica"
        r"|pati[ëe]ntnummer|\bhealth[ _-]?record"
    ),
    "US_PASSPORT": r"passport|passaport[oe]|passeport|pasaporte|reisepass|paspoort|passnummer",
    "DATE_OF_BIRTH": (
        r"\bdob\b|date[ _-]?of[ _-]?birth|birth[ _-]?date|birthday|\bborn\b|\bn[ée]e? le\b"
        r"|\bnat[oa] il\b|nascimento|nacimiento|naissance|nascita|geboren|geburtsdatum"
        r"|geboortedatum|\bnacid[oa]\b|\bnascid[oa]\b|\bbirth\b"
    ),
    "PHONE_NUMBER": (
        r"phone|mobile|\bcell\b|cellulare|call me|reach (?:him|her|me|them|us)|\btel\b|telefon"
        r"|t[ée]l[ée]phone|telefone|tel[ée]fono|\bhandy\b|portable|m[óo]vil|celular|telefoon"
        r"|\bfax\b|whatsapp|\bsms\b|text me|messages to|numero di|n[úu]mero de contacto"
        r"|telem[óo]vel|\bmobil|mobiel|\bt[ée]l\b|\bgsm\b|\bcontact number"
    ),
    "CREDIT_CARD": (
        r"\bcard\b|credit|\bvisa\b|mastercard|master card|\bamex\b|american express|discover"
        r"|cart[ãa]o|carta di credito|\bcarta\b|\bcarte\b|tarjeta|kreditkarte|creditcard"
        r"|\bkarte\b|\bpan\b|card_number"
    ),
    "IBAN_CODE": r"\biban\b|bank account|kontonummer|rekeningnummer|\bbic\b",
}

_CONTEXT_RE = re.compile(
    "|".join(f"(?P<{etype}>{pattern})" for etype, pattern in CONTEXT_WORDS.items()),
    re.IGNORECASE,
)


def nearest_context(text: str, start: int, window: int = CONTEXT_WINDOW) -> str | None:
    """The entity type whose context word ends closest before ``start`` (within ``window``)."""
    lo = max(0, start - window)
    # Context does not reach over another number: "phone 555-0100, order 123456789".
    for i in range(start - 1, lo - 1, -1):
        if text[i].isdigit():
            lo = i + 1
            break
    best: str | None = None
    best_end = -1
    for match in _CONTEXT_RE.finditer(text, lo, start):
        if match.end() >= best_end and match.lastgroup is not None:
            best, best_end = match.lastgroup, match.end()
    return best


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def mod97_ok(code: str) -> bool:
    """ISO 13616 check: move the first four characters to the end, letters to numbers, mod 97."""
    code = code.upper()
    if len(code) < 15 or len(code) > 34 or not code[:2].isalpha() or not code[2:4].isdigit():
        return False
    rearranged = code[4:] + code[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def ssn_ok(digits: str) -> bool:
    """US SSN ranges: area not 000, 666 or 9xx; group not 00; serial not 0000."""
    if len(digits) != 9 or not digits.isdigit():
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


_PLACEHOLDER = re.compile(
    r"""^(?:
        \$\{[^{}]*\}                  # ${DB_PASSWORD}
      | \$(?:env:)?(?:[A-Z_][A-Z0-9_]*|[a-z_][a-z0-9_]*)(?:\.[\w.]+)?  # $TOKEN, $env:PW, $db_pass
      | \$\(.*\)                     # $(cat /run/secrets/db)
      | %[A-Za-z_][A-Za-z0-9_]*%       # %DB_PASSWORD% (Windows)
      | \{\{.*\}\}                   # {{ secret }}
      | <[^<>]*>                     # <your key>
      | %\(?\w*\)?s                  # %(password)s
      | (?:os\.)?(?:environ|getenv)\b.*  # os.environ[...]
      | process\.env\..*
      | .*\b(?:your|my)[-_ ]?(?:own[-_ ]?)?(?:api[-_ ]?)?(?:key|token|secret|password|pass|access|id)\b.*
      | (?:your|my)[-_].*
      | change[-_ ]?me.* | replace[-_ ]?me.* | placeholder.* | example.* | dummy.* | redacted.*
      | x{3,}.* | \*{3,}.* | \.{3,} | …
      | none | null | nil | true | false | secret | password | token | changeit | todo | tbd
      | /[\w./-]*/[\w./-]*             # a path such as /run/secrets/api_token
    )$""",
    re.IGNORECASE | re.VERBOSE,
)


def is_placeholder(value: str) -> bool:
    """True for values that stand for a secret without being one (``$TOKEN``, ``your-api-key``)."""
    stripped = value.strip().strip("\"'`")
    return not stripped or bool(_PLACEHOLDER.match(stripped))
