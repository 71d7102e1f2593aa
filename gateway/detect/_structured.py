"""Structured identifiers: SSN, payment cards, IBAN, phone numbers, e-mail, IPv4, passport, MRN and
dates of birth.

Checksums decide where a format has one (Luhn, mod-97, SSN ranges); context words decide for
numbers that have no shape of their own (passport, MRN, a date that is a date of birth). All
patterns run on the normalized text: full-width digits are ASCII and zero-width characters are gone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from gateway.detect._base import (
    CONTEXT_WORDS,
    Candidate,
    luhn_ok,
    mod97_ok,
    nearest_context,
    ssn_ok,
)

__all__ = ["find_structured"]

_R = "bastion-structured"

# --- payment cards ------------------------------------------------------------------------------
_CARD_PATTERNS = (
    re.compile(r"(?<![\w.-])\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?(?![\w]|[.-]\d)"),
    re.compile(r"(?<![\w.-])\d{4}([ -])\d{6}\1\d{4,5}(?![\w]|[.-]\d)"),  # Amex, Diners
    re.compile(r"(?<![\w.-])\d{13,19}(?![\w]|[.-]\d)"),
)
# --- spaced single digits: "7 5 1 7 3 2 0 7" --------------------------------------------------
_SPACED_DIGITS = re.compile(r"(?<![\w.-])\d(?: \d){6,18}(?![\w]|[.-]\d)")
# --- SSN ----------------------------------------------------------------------------------------
_SSN_FORMATTED = re.compile(r"(?<![\w.-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\w]|[.-]\d)")
_NINE_DIGITS = re.compile(r"(?<![\w.-])\d{9}(?![\w]|[.-]\d)")
# --- digit runs: digits with up to three separator characters between groups -----------------
# The red team of issue 13 glued values to letters (``refA078051120Z``, ``x4111…``) and wrote
# them with any separator run (``078 - 05 - 1120``, U+2044, a card on four lines). A digit run
# is read whatever is around it; the checksums, ranges and group shapes decide. Commas,
# semicolons, brackets, quotes and ``=`` end a run (lists of numbers, code).
_DIGIT_RUN = re.compile(r"\d+(?:[^\w,;()\[\]{}<>\"'=]{1,3}\d+)*")
_DIGIT_GROUP = re.compile(r"\d+")
# A UUID or a long hex string (hashes, commit ids) is not a carrier of digits.
_HEX_TOKEN = re.compile(
    r"(?<![0-9A-Za-z])(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|[0-9a-f]{32,}|[0-9A-F]{32,})(?![0-9A-Za-z])",
    re.IGNORECASE,
)
_LONG_RUN = 24  # digits: a card is looked for inside a single run of at most this many
# --- IBAN: up to three separators (space, dot, dash) between any characters, checked by mod-97
_IBAN_SEP = " .-"
_IBAN = re.compile(
    r"(?<![\w])[A-Z][ .-]{0,3}[A-Z][ .-]{0,3}\d[ .-]{0,3}\d(?:[ .-]{0,3}[A-Z0-9]){11,30}",
    re.IGNORECASE,
)
# --- phones -------------------------------------------------------------------------------------
_PHONE_INTL = re.compile(r"(?<![\w+])(?:\+|00)[1-9]\d{0,2}(?:[ .-]?\(?\d{1,4}\)?){2,6}(?!\w)")
_PHONE_NANP = re.compile(
    r"(?<![\w+.-])(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?![\w]|[.-]\d)"
)
_PHONE_EU = re.compile(
    r"(?<![\w+.-])(?:0[1-9](?:[ .-]\d{2}){4}|[6-9]\d{2}(?:[ .]\d{2}){3})(?![\w]|[.-]\d)"
)
# --- e-mail, plain and obfuscated ---------------------------------------------------------------
_LOCAL = r"[A-Za-z0-9][A-Za-z0-9._%+-]*"
_DOMAIN = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}\b"
_EMAIL = re.compile(rf"(?<![\w.%+-]){_LOCAL}(?:@|%40){_DOMAIN}", re.IGNORECASE)
_EMAIL_QUOTED = re.compile(rf'"[^"\s@]{{1,64}}"(?:@|%40){_DOMAIN}', re.IGNORECASE)  # "jane.roe"@
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_EMAIL_BRACKETED = re.compile(
    rf"(?<![\w.%+-]){_LOCAL}\s*[\[({{<]\s*at\s*[\])}}>]\s*{_LABEL}"
    rf"(?:\s*(?:[\[({{<]\s*dot\s*[\])}}>]|\.)\s*{_LABEL})+",
    re.IGNORECASE,
)
_EMAIL_WORDS = re.compile(
    rf"(?<![\w.%+-]){_LOCAL}\s+at\s+{_LABEL}(?:\s+dot\s+{_LABEL})+\b", re.IGNORECASE
)
# --- IPv4 ---------------------------------------------------------------------------------------
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\d.])(?:{_OCTET}\.){{3}}{_OCTET}(?!\.?\d)")
_IP_NOT_PERSONAL = (
    "127.",
    "0.",
    "255.",
    "192.0.2.",  # RFC 5737 documentation ranges
    "198.51.100.",
    "203.0.113.",
)
_VERSION_BEFORE = re.compile(r"(?:version|release|build|\bver\.?|\bv)\s*$", re.IGNORECASE)
# --- numbers typed by their context (passport, MRN, SSN, phone, card) ---------------------------
_CONTEXT_NUMBER = re.compile(r"(?<![\w@%+.])[A-Za-z]{0,2}\d(?:[ ./-]?\d){4,18}(?![\w@%]|[./-]\d)")
# --- dates (only dates of birth are reported) ---------------------------------------------------
_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december"
    "|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
    "|januar|februar|märz|maerz|juni|juli|oktober|dezember"
    "|janvier|février|fevrier|mars|avril|mai|juin|juillet|août|aout|septembre|octobre|novembre"
    "|décembre|decembre|enero|febrero|marzo|abril|mayo|junio|julio|agosto|septiembre|octubre"
    "|noviembre|diciembre|gennaio|febbraio|aprile|maggio|giugno|luglio|settembre|ottobre"
    "|dicembre|janeiro|fevereiro|março|maio|junho|julho|setembro|outubro|dezembro|januari"
    "|februari|maart|mei|augustus"
)
_DOB_WORD = re.compile(CONTEXT_WORDS["DATE_OF_BIRTH"], re.IGNORECASE)
_DATES = (
    re.compile(r"(?<![\w./-])\d{1,2}([/.-])\d{1,2}\1(?:19|20)?\d{2}(?![\w]|[./-]\d)"),
    re.compile(r"(?<![\w./-])(?:19|20)\d{2}([/.-])\d{1,2}\1\d{1,2}(?![\w]|[./-]\d)"),
    re.compile(
        # The lookahead (a word, then a space and a digit) skips most positions before the
        # month alternation is tried.
        rf"\b(?=[^\W\d_]{{3,10}}\.? \d)(?:{_MONTHS})\.? \d{{1,2}}(?:st|nd|rd|th)?,? (?:19|20)\d{{2}}\b",
        re.IGNORECASE,
    ),
    re.compile(
        rf"\b\d{{1,2}}(?:st|nd|rd|th|er|º)?\.? (?:of |de )?(?:{_MONTHS})\.?,? (?:de )?(?:19|20)\d{{2}}\b",
        re.IGNORECASE,
    ),
)


def find_structured(text: str) -> Iterator[Candidate]:
    """Every structured identifier in a normalized text."""
    yield from _cards(text)
    yield from _ssns(text)
    yield from _ibans(text)
    yield from _phones(text)
    yield from _emails(text)
    yield from _ipv4s(text)
    yield from _context_numbers(text)
    yield from _spaced_digits(text)
    yield from _digit_runs(text)
    yield from _dates_of_birth(text)


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def _cards(text: str) -> Iterator[Candidate]:
    for pattern in _CARD_PATTERNS:
        for m in pattern.finditer(text):
            digits = _digits(m.group())
            if not 13 <= len(digits) <= 19 or not luhn_ok(digits) or len(set(digits)) < 3:
                continue
            context = nearest_context(text, m.start())
            grouped = not m.group().isdigit()
            if context == "CREDIT_CARD":
                score = 0.95
            elif len(digits) >= 15 and digits[0] in "23456":
                score = 0.85 if grouped else 0.7
            elif len(digits) >= 15 or grouped:
                score = 0.55
            else:
                continue  # 13-14 bare digits (EAN-13 and friends) need card context
            yield Candidate("CREDIT_CARD", score, m.start(), m.end(), _R)


def _ssns(text: str) -> Iterator[Candidate]:
    for m in _SSN_FORMATTED.finditer(text):
        digits = m.group(1) + m.group(3) + m.group(4)
        if ssn_ok(digits):
            context = nearest_context(text, m.start())
            score = 0.9 if context == "US_SSN" else (0.6 if m.group(2) == "-" else 0.5)
            yield Candidate("US_SSN", score, m.start(), m.end(), _R)
    for m in _NINE_DIGITS.finditer(text):
        # A bare 9-digit number in a valid SSN range is reported (at the default threshold):
        # failing closed costs a pseudonym, missing one leaks an SSN.
        if ssn_ok(m.group()) and nearest_context(text, m.start()) in (None, "US_SSN"):
            yield Candidate("US_SSN", 0.5, m.start(), m.end(), _R)


def _ibans(text: str) -> Iterator[Candidate]:
    for m in _IBAN.finditer(text):
        chars = [(i, c) for i, c in enumerate(m.group(), m.start()) if c not in _IBAN_SEP]
        for length in range(min(len(chars), 34), 14, -1):
            code = "".join(c for _, c in chars[:length])
            end = chars[length - 1][0] + 1
            if mod97_ok(code) and (end == len(text) or not text[end].isalnum()):
                yield Candidate("IBAN_CODE", 0.95, m.start(), end, _R)
                break


def _phones(text: str) -> Iterator[Candidate]:
    for m in _PHONE_INTL.finditer(text):
        span = m.group().rstrip(").- ")
        digits = _digits(span)
        if 8 <= len(digits) <= 15:
            yield Candidate("PHONE_NUMBER", 0.75, m.start(), m.start() + len(span), _R)
    for pattern, base in ((_PHONE_NANP, 0.7), (_PHONE_EU, 0.6)):
        for m in pattern.finditer(text):
            context = nearest_context(text, m.start())
            score = 0.9 if context == "PHONE_NUMBER" else base
            yield Candidate("PHONE_NUMBER", score, m.start(), m.end(), _R)


def _emails(text: str) -> Iterator[Candidate]:
    for pattern, score in (
        (_EMAIL, 0.95),
        (_EMAIL_QUOTED, 0.9),
        (_EMAIL_BRACKETED, 0.85),
        (_EMAIL_WORDS, 0.8),
    ):
        for m in pattern.finditer(text):
            yield Candidate("EMAIL_ADDRESS", score, m.start(), m.end(), _R)


def _ipv4s(text: str) -> Iterator[Candidate]:
    for m in _IPV4.finditer(text):
        ip = m.group()
        if ip.startswith(_IP_NOT_PERSONAL) or _VERSION_BEFORE.search(text, 0, m.start()):
            continue
        yield Candidate("IP_ADDRESS", 0.75, m.start(), m.end(), _R)


def _context_numbers(text: str) -> Iterator[Candidate]:
    for m in _CONTEXT_NUMBER.finditer(text):
        context = nearest_context(text, m.start())
        if context is None:  # "612 34 56 78, teléfono": a phone word just after the number
            after = nearest_context(text, min(len(text), m.end() + 24), window=24)
            context = after if after == "PHONE_NUMBER" else None
        if context is None:
            continue
        value = m.group()
        digits = _digits(value)
        n = len(digits)
        letters = len(value) - len(
            value.lstrip("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
        )
        if context == "US_SSN" and n == 9 and not letters:
            yield Candidate("US_SSN", 0.9, m.start(), m.end(), _R)
        elif context == "MEDICAL_RECORD_NUMBER" and 5 <= n <= 12:
            yield Candidate("MEDICAL_RECORD_NUMBER", 0.85, m.start(), m.end(), _R)
        elif context == "US_PASSPORT" and 6 <= n <= 10:
            yield Candidate("US_PASSPORT", 0.85, m.start(), m.end(), _R)
        elif context == "PHONE_NUMBER" and 7 <= n <= 15 and not letters:
            yield Candidate("PHONE_NUMBER", 0.85, m.start(), m.end(), _R)
        elif context == "CREDIT_CARD" and 13 <= n <= 19 and luhn_ok(digits) and not letters:
            yield Candidate("CREDIT_CARD", 0.95, m.start(), m.end(), _R)


def _spaced_digits(text: str) -> Iterator[Candidate]:
    """Single digits separated by spaces: an identifier written to dodge pattern matching."""
    for m in _SPACED_DIGITS.finditer(text):
        digits = _digits(m.group())
        context = nearest_context(text, m.start())
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            entity = "CREDIT_CARD"
        elif context in ("US_SSN", "MEDICAL_RECORD_NUMBER", "US_PASSPORT", "PHONE_NUMBER"):
            entity = context
        elif len(digits) == 9 and ssn_ok(digits):
            entity = "US_SSN"
        elif len(digits) in (10, 11):
            entity = "PHONE_NUMBER"
        else:
            entity = "ID_NUMBER"
        yield Candidate(entity, 0.7, m.start(), m.end(), _R)


def _card_brand(digits: str) -> bool:
    """The number has a major card network's prefix and one of its lengths."""
    n = len(digits)
    if digits[0] == "4":
        return n in (13, 16, 19)
    if "51" <= digits[:2] <= "55" or "2221" <= digits[:4] <= "2720":
        return n == 16
    if digits[:2] in ("34", "37"):
        return n == 15
    if digits.startswith(("6011", "65")) or "644" <= digits[:3] <= "649":
        return 16 <= n <= 19
    if "3528" <= digits[:4] <= "3589":  # JCB
        return 16 <= n <= 19
    return False


def _card_groups(lengths: list[int]) -> bool:
    """Groups as cards are written: one run, fours (the last may be shorter), 4-6-5 or 4-6-4."""
    return (
        len(lengths) == 1
        or (all(n == 4 for n in lengths[:-1]) and 1 <= lengths[-1] <= 4)
        or lengths in ([4, 6, 5], [4, 6, 4])
    )


def _digit_runs(text: str) -> Iterator[Candidate]:
    """SSNs and cards in digit runs, whatever letters touch them and whatever separates groups.

    The other recognizers want a boundary and a separator they know; this one reads only the
    digits: an SSN is a run of nine digits (one group, or 3-2-4) in the SSN ranges, a card a run
    of 13-19 digits grouped as cards are, with a network's prefix (or card context) and Luhn,
    also inside a single longer run of digits."""
    hex_spans = [m.span() for m in _HEX_TOKEN.finditer(text)] if len(text) >= 32 else []
    for m in _DIGIT_RUN.finditer(text):
        start, end = m.span()
        if hex_spans and any(lo <= start and end <= hi for lo, hi in hex_spans):
            continue
        groups = _DIGIT_GROUP.findall(m.group())
        digits = "".join(groups)
        n = len(digits)
        if n < 9:
            continue
        lengths = [len(g) for g in groups]
        context = nearest_context(text, start)
        if n == 9 and lengths in ([9], [3, 2, 4]) and ssn_ok(digits):
            if context in (None, "US_SSN"):
                yield Candidate("US_SSN", 0.9 if context else 0.5, start, end, _R)
            continue
        if n < 13 or len(set(digits)) < 2:  # 4111 1111 1111 1111, the test Visa, is a card
            continue
        if (
            n <= 19
            and _card_groups(lengths)
            and luhn_ok(digits)
            and (context == "CREDIT_CARD" or _card_brand(digits))
        ):
            score = 0.95 if context == "CREDIT_CARD" else 0.7
            yield Candidate("CREDIT_CARD", score, start, end, _R)
            continue
        if len(lengths) == 1 and 16 < n <= _LONG_RUN:  # "order 9941111111111111111"
            for length in (16, 15):
                if any(
                    _card_brand(digits[i : i + length]) and luhn_ok(digits[i : i + length])
                    for i in range(n - length + 1)
                ):
                    yield Candidate("CREDIT_CARD", 0.6, start, end, _R)
                    break


def _dates_of_birth(text: str) -> Iterator[Candidate]:
    if not _DOB_WORD.search(text):
        return
    for pattern in _DATES:
        for m in pattern.finditer(text):
            if nearest_context(text, m.start()) == "DATE_OF_BIRTH":
                yield Candidate("DATE_OF_BIRTH", 0.9, m.start(), m.end(), _R)
