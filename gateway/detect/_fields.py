"""Values typed by the field that holds them: JSON keys, YAML/.env/Python assignments, URL query
parameters and CSV columns.

A field named ``ssn``, ``passport_number``, ``name`` or ``password`` says what its value is, even
when the value has no shape of its own (a 7-digit MRN, a lowercase name, a password without a
cue word in front of it). Values still have to look like their type (digits for numbers, letters
for names) and placeholders are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from gateway.detect._base import Candidate, is_placeholder
from gateway.detect._secrets import password_score

__all__ = ["field_entity", "find_fields"]

_R = "bastion-fields"

_EXACT: dict[str, str] = {}
for _entity, _keys in {
    "PERSON": "name full_name fullname customer_name patient_name first_name last_name surname "
    "given_name family_name account_holder holder contact_name client_name cliente kunde "
    "nome cognome nom prenom vorname nachname apellido naam",
    "STREET_ADDRESS": "address home_address street street_address billing_address "
    "mailing_address shipping_address addr address_line1 address_line_1 address1 "
    "indirizzo adresse anschrift direccion endereco adres",
    "EMAIL_ADDRESS": "email e_mail mail email_address addr_email contact_email courriel",
    "PHONE_NUMBER": "phone phone_number mobile mobile_number tel telephone cell cellphone "
    "telefon telefono telefone telephone_number contact_phone",
    "US_SSN": "ssn social_security_number social_security us_ssn",
    "MEDICAL_RECORD_NUMBER": "mrn medical_record_number medical_record patient_id "
    "patient_number record_number",
    "US_PASSPORT": "passport passport_number passport_no passport_id passport_num",
    "DATE_OF_BIRTH": "dob date_of_birth birth_date birthdate birthday born",
    "IBAN_CODE": "iban iban_code bank_account account_iban",
    "CREDIT_CARD": "card card_number credit_card cc cc_number pan card_no",
    "IP_ADDRESS": "ip ip_address ipv4 client_ip remote_addr remote_ip source_ip",
    "AWS_ACCESS_KEY": "aws_access_key_id aws_access_key",
}.items():
    for _key in _keys.split():
        _EXACT[_key] = _entity

_PASSWORD_KEY = re.compile(r"(?:^|_)(?:password|passwd|pwd|passphrase|pass)(?:$|_)")
_SECRET_KEY = re.compile(
    r"(?:^|_)(?:token|secret|api_?key|apikey|access_?key|secret_?key|private_?key|auth|"
    r"credentials?|session_?key|client_?secret|bearer|jwt)$"
)

# "key": "value"  (also single quotes, as in Python dicts)
_JSON_PAIR = re.compile(
    r"""(["'])([A-Za-z_][\w .-]{0,40})\1\s*:\s*(["'])((?:\\.|(?!\3).){1,400}?)\3"""
)
# key: value / key = value / KEY=value at the start of a line (YAML, .env, ini, Python)
_LINE_PAIR = re.compile(
    r"""^[ \t-]*(?:export[ \t]+)?([A-Za-z_][\w.-]{0,40})[ \t]*(?::=|=|:)[ \t]*(?![|>][ \t]*$)(.+?)[ \t]*$""",
    re.MULTILINE,
)
# key=value inside prose or a URL query string
_INLINE_PAIR = re.compile(r"(?<![\w.-])([A-Za-z_][\w-]{1,40})=([^\s&\"'<>]{1,400})")
_MONTH = re.compile(r"\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\b", re.IGNORECASE)
_CSV_HEADER = re.compile(r"^[ \t]*[A-Za-z_][\w ]{0,40}(?:,[A-Za-z_][\w ]{0,40})+[ \t]*$")


def field_entity(key: str) -> str | None:
    """The entity type a field name announces, if any."""
    norm = re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_")
    if norm in _EXACT:
        return _EXACT[norm]
    if _PASSWORD_KEY.search(norm):
        return "PASSWORD"
    if _SECRET_KEY.search(norm):
        return "CREDENTIAL"
    return None


def find_fields(text: str) -> Iterator[Candidate]:
    """Values whose field name says what they are."""
    for m in _JSON_PAIR.finditer(text):
        yield from _typed_value(m.group(2), text, m.start(4), m.end(4))
    for m in _LINE_PAIR.finditer(text):
        start, end = m.span(2)
        value = m.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            start, end = start + 1, end - 1
        elif value.endswith(","):  # trailing comma in a Python/JS literal
            end -= 1
        elif field_entity(m.group(1)) not in ("PASSWORD", "CREDENTIAL"):
            while end > start and text[end - 1] in ".;":  # a prose line: "Cliente: ana lima."
                end -= 1
        yield from _typed_value(m.group(1), text, start, end)
    for m in _INLINE_PAIR.finditer(text):
        start, end = m.span(2)
        while end > start and text[end - 1] in ".,;:)]}":
            end -= 1
        yield from _typed_value(m.group(1), text, start, end)
    yield from _csv(text)


def _typed_value(key: str, text: str, start: int, end: int) -> Iterator[Candidate]:
    entity = field_entity(key)
    if entity is None or start >= end:
        return
    value = text[start:end]
    score = _value_score(entity, value)
    if score > 0.0:
        yield Candidate(entity, score, start, end, _R)


def _value_score(entity: str, value: str) -> float:
    stripped = value.strip()
    if not stripped or is_placeholder(stripped):
        return 0.0
    digits = sum(c.isdigit() for c in stripped)
    if entity == "PERSON":
        words = stripped.replace(",", " ").split()
        ok = 1 <= len(words) <= 6 and all(_is_name_word(w) for w in words) and len(stripped) <= 80
        return 0.85 if ok else 0.0
    if entity == "STREET_ADDRESS":
        return 0.85 if 5 <= len(stripped) <= 160 and any(c.isalpha() for c in stripped) else 0.0
    if entity == "EMAIL_ADDRESS":
        lowered = stripped.lower()
        return 0.9 if "@" in lowered or "%40" in lowered or " at " in lowered else 0.0
    if entity == "DATE_OF_BIRTH":
        return 0.9 if digits >= 4 or (digits and _MONTH.search(stripped)) else 0.0
    if entity == "IBAN_CODE":
        return 0.9 if sum(c.isalnum() for c in stripped) >= 15 and digits >= 8 else 0.0
    if entity in ("PHONE_NUMBER", "US_SSN", "MEDICAL_RECORD_NUMBER", "CREDIT_CARD"):
        return 0.9 if digits >= 5 and digits * 2 >= len(stripped.replace(" ", "")) else 0.0
    if entity == "US_PASSPORT":
        return 0.9 if digits >= 5 else 0.0
    if entity == "IP_ADDRESS":
        return 0.85 if digits >= 4 and ("." in stripped or ":" in stripped) else 0.0
    if entity == "PASSWORD":
        return password_score(stripped)
    if entity in ("CREDENTIAL", "AWS_ACCESS_KEY"):
        ok = len(stripped) >= 8 and " " not in stripped and digits > 0
        return 0.85 if ok else 0.0
    return 0.0


def _is_name_word(word: str) -> bool:
    core = word.strip(".'’-")
    return bool(core) and all(c.isalpha() or c in ".'’-" for c in word)


def _csv(text: str) -> Iterator[Candidate]:
    """Cells of CSV blocks whose header names a sensitive column."""
    lines: list[tuple[int, str]] = []
    pos = 0
    for line in text.split("\n"):
        lines.append((pos, line))
        pos += len(line) + 1
    i = 0
    while i < len(lines):
        line = lines[i][1]
        i += 1
        if "," not in line or not _CSV_HEADER.match(line):
            continue
        header = [field_entity(h.strip()) for h in line.split(",")]
        if not any(header):
            continue
        while i < len(lines):
            row_offset, row = lines[i]
            if not row.strip() or row.lstrip().startswith("```"):
                break
            i += 1
            for column, (start, end) in enumerate(_csv_cells(row)):
                if column >= len(header) or header[column] is None or start >= end:
                    continue
                entity = header[column]
                if entity is None:
                    continue
                value = row[start:end]
                score = _value_score(entity, value)
                if score > 0.0:
                    yield Candidate(entity, score, row_offset + start, row_offset + end, _R)


def _csv_cells(row: str) -> Iterator[tuple[int, int]]:
    """Spans of each cell's content (inside the quotes for quoted cells)."""
    n = len(row)
    i = 0
    while i <= n:
        if i < n and row[i] == '"':
            j = i + 1
            while j < n:
                if row[j] == '"':
                    if j + 1 < n and row[j + 1] == '"':
                        j += 2
                        continue
                    break
                j += 1
            yield i + 1, j
            k = row.find(",", j)
            i = n + 1 if k < 0 else k + 1
        else:
            k = row.find(",", i)
            end = n if k < 0 else k
            yield i, end
            i = end + 1
