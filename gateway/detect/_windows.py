"""Where the NER model runs, and on what copy of the text.

spaCy's small English model costs about 15-20 ms per KB on one core, so it only sees windows
where a name is plausible (issue 13, item 5 asks recall from language cues, context and the
model, never from a list of names):

- **Capitalized pairs**: two adjacent Capitalized words (up to three particles between them:
  ``Juan de la Cruz``), or ``Last, First``; the sentence around them (capped). A pair whose
  first word only starts the sentence (``The Imogen Castellanos account``) is tried again from
  its second word, so the name behind it is not lost.
- **Lowercase after an introducing phrase**: ``with tobias reinholt``, ``ask priya …``,
  ``my colleague henrik …``, ``cc dmitri …``. The model cannot see a lowercase name, so the
  window is given to it *recased* (``with Tobias Reinholt``); common words after the phrase
  (``with great care``) are not names to the model either way.
- **ALL-CAPS runs**: ``SEND IT TO ROBERT KOWALSKI`` is recased (``Send It to Robert Kowalski``).
- **Lowercase words English does not know**: ``suzanne renault from …``, ``the aurora siqueira
  version`` (a lowercase word the model's English lexicon does not know, see ``_lexicon``, with
  the unknown or content word beside it), recased, in
  English text only (a text where many words are unknown is another language: the model is
  English, and every pair of words would go to it), at most ``_MAX_UNKNOWN_PAIRS`` per text.

Recasing keeps the length (a character whose case change would not is left as it is), so the
model's offsets are the text's. Each window records which spans were recased: the detector
accepts a person there only when the model marks two or more words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from spacy.lang.en.stop_words import STOP_WORDS

from gateway.detect._lexicon import is_english_word

__all__ = ["NOT_NAME_START", "Windows", "ner_windows"]

_WINDOW_SIDE = 32  # characters of context either side of a capitalized pair (within its sentence)
_CUE_SIDE = 14  # and around a recased name (the introducing phrase and a word after)
_MAX_CAPS_RUN = 240  # characters of one ALL-CAPS run recased (headings, shouted sentences)
_BOUNDARY = re.compile(r"[.!?\n]")
_UPPER = "A-ZÀ-ÖØ-ÞĀ-Ž"
_PARTICLE = r"(?:[a-zó]{1,4}|Mac|Mc|Ó|Ní|D'|d')"
_CAP_WORD = rf"[{_UPPER}][\w'’-]+"
_CAP_PAIR = re.compile(
    rf"(?<![\w'’-]){_CAP_WORD}(?:[ \t]+(?:{_PARTICLE}[ \t]+){{0,3}}|,[ \t]+){_CAP_WORD}"
)
# Capitalized words that start sentences or headings, not names: pairs with them need no NER.
NOT_NAME_START = frozenset(
    [
        "The",
        "This",
        "That",
        "These",
        "Those",
        "Also",
        "Note",
        "For",
        "Please",
        "Thanks",
        "Thank",
        "I",
        "We",
        "Our",
        "Your",
        "You",
        "He",
        "She",
        "It",
        "They",
        "Here",
        "There",
        "What",
        "When",
        "Where",
        "Why",
        "How",
        "Is",
        "Are",
        "Was",
        "Were",
        "Can",
        "Could",
        "Would",
        "Should",
        "Will",
        "May",
        "Do",
        "Does",
        "Did",
        "Let",
        "Good",
        "Great",
        "OK",
        "Yes",
        "No",
        "Not",
        "And",
        "But",
        "Or",
        "If",
        "Then",
        "Dear",
        "Hi",
        "Hello",
    ]
)
# Phrases after which a person is often named; a lowercase name after them goes to the model.
_WEAK_CUE = re.compile(
    r"""(?<![\w-])(?=[wWaAcCbBpPdDhHtTmMeEiIvVsSnNfFuUlLrRgGoOjJ])(?:with|ask|asked|cc|bcc|attn|per|dear|hi|hello|hey|thanks(?:\ to)?
      |thank\ you|met|meet|meeting(?:\ with)?|call|called|phoned|e-?mail(?:ed)?|contact(?:ed)?
      |told|tell|invited|introduced|visited|saw|signed(?:\ by)?|colleague|co-?worker|friend|boss
      |manager|neighbou?r|wife|husband|son|daughter|brother|sister|mother|father|uncle|aunt
      |cousin|doctor|nurse|professor|prof\.?|mr\.?|mrs\.?|ms\.?|dr\.?|sir|madam|miss
      |(?:spoke|speak|talk|talked|talking|write|wrote|send|sent|forward|forwarded|reply|replied
        |assigned|belongs|give|gave|hand|handed|introduce|refer|referred|escalate|escalated)
       \ (?:to|with)
      |(?:message|email|e-mail|call|letter|note|request|complaint|reply|invoice)\ (?:from|for|by)
      |(?:approved|reported|submitted|filed|written|sent|requested|opened|escalated)\ by)
      [:,]?[ \t]+""",
    re.IGNORECASE | re.VERBOSE,
)
_PERSON_CUE = re.compile(
    r"""ask|asked|cc|bcc|attn|dear|hi|hello|hey|thanks\ to|met|meeting\ with|signed\ by
      |prof\.?|mr\.?|mrs\.?|ms\.?|dr\.?|miss|(?:spoke|speak|talk|talked|talking)\ (?:to|with)
      |(?:approved|reported|submitted|filed|written|requested|escalated)\ by""",
    re.IGNORECASE | re.VERBOSE,
)
_LOWER_WORD = re.compile(r"[^\W\d_A-ZÀ-Þ][^\W\d_]*(?:['’-][^\W\d_]+)?")
_NOT_LOWER_NAME = frozenset(STOP_WORDS) | frozenset(
    [
        "please",
        "thanks",
        "team",
        "all",
        "everyone",
        "everybody",
        "someone",
        "anyone",
        "support",
        "sales",
        "legal",
        "hr",
        "it",
        "finance",
        "billing",
        "accounting",
        "customer",
        "customers",
        "client",
        "clients",
        "patient",
        "patients",
        "user",
        "users",
        "guest",
        "guests",
        "staff",
        "people",
        "folks",
        "guys",
    ]
)
_MAX_UNKNOWN_PAIRS = 6
# Share of lowercase words the English lexicon knows, at or above which a text is English: on the
# dev corpus English texts are at 0.75 or more nine times in ten, German, Spanish, Italian and
# Portuguese ones mostly under 0.4; a chatty English note full of names can be near 0.5.
_MIN_ENGLISH_SHARE = 0.5
_LANGUAGE_SAMPLE = 120
_MIN_WORDS_FOR_SHARE = 4  # fewer lowercase words than this: no judgement, taken as English
_LOWERCASE_WORD = re.compile(r"(?<![\w'’-])[^\W\d_A-ZÀ-Þ][^\W\d_]+(?![\w'’-])")
# Lowercase words in a row; a word glued to an identifier ("ghp_…", "a.b", "x@y") is not one.
_LOWER_RUN = re.compile(
    r"(?<![\w'’@./-])[^\W\d_A-ZÀ-Þ][^\W\d_]+(?:-[^\W\d_]+)*"
    r"(?:[ \t]+[^\W\d_A-ZÀ-Þ][^\W\d_]+(?:-[^\W\d_]+)*)+(?![\w@/]|[.-]\w)"
)
_CAPS_RUN = re.compile(r"(?<![\w'’-])[A-Z][A-Z'’-]+(?:[ \t]+[A-Z][A-Z'’.-]*)+(?![\w'’-])")


# Real name particles (not any short word): ``Pedro de los Santos``, ``Koen van der Meulen``.
NAME_PARTICLES = frozenset(
    [
        "van",
        "von",
        "der",
        "den",
        "de",
        "da",
        "di",
        "del",
        "della",
        "dei",
        "des",
        "dos",
        "das",
        "du",
        "le",
        "la",
        "las",
        "los",
        "lo",
        "y",
        "e",
        "bin",
        "ibn",
        "al",
        "el",
        "ter",
        "ten",
        "zu",
        "af",
    ]
)
_NAME_SEQUENCE = re.compile(
    rf"(?<![\w'’-]){_CAP_WORD}(?:(?:,[ \t]+|[ \t]+(?:(?:{'|'.join(sorted(NAME_PARTICLES))})[ \t]+){{0,3}})"
    rf"{_CAP_WORD}){{1,4}}(?![\w'’-])"
)


def _name_sequences(text: str) -> list[tuple[int, int]]:
    """Runs of two to five capitalized words (particles and ``Last, First`` commas allowed),
    each run also tried from its later words (``Signed, Ferreira-Lobo, Inês``)."""
    found: list[tuple[int, int]] = []
    pos = 0
    while True:
        m = _NAME_SEQUENCE.search(text, pos)
        if m is None:
            return found
        found.append(m.span())
        second = re.search(r"[ \t,]+\S", m.group())
        pos = m.start() + (second.end() - 1 if second else len(m.group()))


@dataclass(frozen=True, slots=True)
class Windows:
    """Spans of one normalized text for the model, the text to give it, the recased spans."""

    spans: tuple[tuple[int, int], ...]
    text: str  # the normalized text with the recased words recased (same length)
    recased: tuple[tuple[int, int], ...]
    pairs: tuple[tuple[int, int], ...] = ()  # capitalized word runs (in ``text``), see below
    english: bool = True  # see is_english: shape-only guesses are made in English text only


def _recase_word(word: str) -> str:
    out = []
    for k, ch in enumerate(word):
        changed = ch.upper() if k == 0 else ch.lower()
        out.append(changed if len(changed) == 1 else ch)
    return "".join(out)


def _sentence(text: str, start: int, end: int, side: int) -> tuple[int, int]:
    lo = max(0, start - side)
    hi = min(len(text), end + side)
    before = [b.end() for b in _BOUNDARY.finditer(text, lo, start)]
    after = _BOUNDARY.search(text, end, hi)
    return (before[-1] if before else lo), (after.start() if after else hi)


def _cap_pairs(text: str) -> list[tuple[int, int]]:
    found: list[tuple[int, int]] = []
    pos = 0
    while True:
        m = _CAP_PAIR.search(text, pos)
        if m is None:
            return found
        words = m.group().replace(",", " ").split()
        if words[0] in NOT_NAME_START:
            pos = m.start() + len(words[0])  # "The Imogen Castellanos": try from "Imogen"
            continue
        if words[-1] not in NOT_NAME_START:
            found.append(m.span())
        pos = m.end()


def _lower_after_cues(text: str) -> list[tuple[int, int]]:
    """Two or three lowercase words (none a common word) right after an introducing phrase."""
    found: list[tuple[int, int]] = []
    for cue in _WEAK_CUE.finditer(text):
        pos = cue.end()
        words: list[tuple[int, int]] = []
        while len(words) < 3:
            m = _LOWER_WORD.match(text, pos)
            if m is None or m.group().lower() in _NOT_LOWER_NAME or len(m.group()) < 2:
                break
            words.append(m.span())
            pos = m.end()
            if not text.startswith((" ", "\t"), pos) or text.startswith(("  ",), pos):
                break
            pos += 1
        if len(words) == 3 and is_english_word(text[words[2][0] : words[2][1]]):
            words.pop()  # "with tobias reinholt yesterday"
        if len(words) < 2:
            continue
        # After a phrase that names a person next ("dr.", "cc", "ask", "spoke to"), any two words
        # may be a name; after others ("with", "call", "my sister"), two English words are
        # usually just words ("with great care"): at least one must be unknown to English.
        if _PERSON_CUE.fullmatch(cue.group().rstrip(":, \t")) or not all(
            is_english_word(text[a:b]) for a, b in words
        ):
            found.append((words[0][0], words[-1][1]))
    return found


def _unknown_lower(text: str) -> list[tuple[int, int]]:
    """Lowercase words English does not know, with the word beside them: two or three unknown
    words in a row (``suzanne renault``), or one unknown word and the content word before it
    (``aurora siqueira``) or after it. Only in a run of words that reads as English (``una
    pratica`` in an Italian sentence of an English request is not a name)."""
    found: list[tuple[int, int]] = []
    for run in _LOWER_RUN.finditer(text):
        words = [
            (w.start() + run.start(), w.end() + run.start(), w.group())
            for w in re.finditer(r"\S+", run.group())
        ]
        lower = [w[2][0].islower() for w in words]  # "Şensoy", "Крюкова": capitalized
        common = [
            w[2] in _NOT_LOWER_NAME or len(w[2]) < 3 or not low
            for w, low in zip(words, lower, strict=True)
        ]
        flags = [not c and not is_english_word(w[2]) for w, c in zip(words, common, strict=True)]
        if len(words) >= 4 and 2 * sum(flags) > len(words):
            continue  # mostly unknown words: another language
        k = 0
        while k < len(words):
            if not flags[k]:
                k += 1
                continue
            j = k
            while j < len(words) and flags[j] and j - k < 3:
                j += 1
            if j - k >= 2:
                found.append((words[k][0], words[j - 1][1]))
            elif k > 0 and not common[k - 1]:
                found.append((words[k - 1][0], words[k][1]))
            elif j < len(words) and not common[j]:
                found.append((words[k][0], words[j][1]))
            k = j
    return found[:_MAX_UNKNOWN_PAIRS]


def is_english(text: str) -> bool:
    """Whether most lowercase words of ``text`` are English (names are capitalized, so they do
    not count; German nouns are capitalized too, its other words are not English). Judged on
    the first ``_LANGUAGE_SAMPLE`` lowercase words of three letters or more."""
    words = []
    for m in _LOWERCASE_WORD.finditer(text):
        if len(m.group()) >= 3:
            words.append(m.group())
            if len(words) >= _LANGUAGE_SAMPLE:
                break
    known = sum(1 for w in words if w in _NOT_LOWER_NAME or is_english_word(w))
    if len(words) < _MIN_WORDS_FOR_SHARE:
        return known > 0 or not words  # "Falta alguma coisa?" is not English
    return known / len(words) >= _MIN_ENGLISH_SHARE


def ner_windows(text: str, covered: Sequence[tuple[int, int]] = ()) -> Windows:
    """Where the model should look in ``text`` (normalized), and the copy to show it.

    ``covered``: spans other recognizers already report as a person or an address (with a cue:
    ``Account holder: …``, ``lives at …``); a candidate inside one needs no model."""

    def known(start: int, end: int) -> bool:
        return any(lo <= start and end <= hi for lo, hi in covered)

    spans: list[tuple[int, int]] = []
    recased: list[tuple[int, int]] = []
    pairs = _cap_pairs(text)
    unknown = _unknown_lower(text)
    # The language is judged only where a guess depends on it (it reads every word).
    english = is_english(text) if unknown or _NAME_SEQUENCE.search(text) else True
    for start, end in pairs:
        if not known(start, end):
            spans.append(_sentence(text, start, end, _WINDOW_SIDE))
    lowercase = [*(unknown if english else ()), *_lower_after_cues(text)]
    for start, end in lowercase:
        if not known(start, end):
            recased.append((start, end))
            spans.append((max(0, start - _CUE_SIDE), min(len(text), end + _CUE_SIDE)))
    for m in _CAPS_RUN.finditer(text):
        start, end = m.start(), min(m.end(), m.start() + _MAX_CAPS_RUN)
        if sum(c.isalpha() for c in m.group()) < 5 or known(start, end):
            continue
        recased.append((start, end))
        spans.append(_sentence(text, start, end, _CUE_SIDE))
    if not spans:
        return Windows((), text, (), tuple(_name_sequences(text)), english)
    shown = text
    if recased:
        chars = list(text)
        for start, end in recased:
            for w in re.finditer(r"[^\W\d_]+", text[start:end]):
                word = w.group()
                lowered = word.lower()
                new = lowered if lowered in STOP_WORDS and word.isupper() else _recase_word(word)
                chars[start + w.start() : start + w.end()] = list(new)
        shown = "".join(chars)
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    sequences = tuple(_name_sequences(shown))
    return Windows(tuple(merged), shown, tuple(sorted(recased)), sequences, english)
