"""Fixtures for detection and sanitization tests: one real Presidio/spaCy detector per session."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.detect import DetectionSpec, Detector, Finding, TextRef
from tests.detect.pii_match import load_corpus


@pytest.fixture(scope="session")
def detector() -> Detector:
    """The default-spec detector over the shared analyzer (spaCy loads once per session)."""
    return Detector(DetectionSpec())


@pytest.fixture(scope="session")
def corpus() -> list[dict[str, Any]]:
    items = load_corpus()
    if items is None:
        pytest.skip(
            "pii_dev corpus not found at ../shared/pii_dev/pii_dev.jsonl (outside the repo)"
        )
    return items


def find_in(detector: Detector, text: str) -> list[tuple[str, str]]:
    """(entity type, matched original text) for one text."""
    findings: list[Finding] = detector.analyze([TextRef("t", text)])
    return [(f.entity_type, text[f.start : f.end]) for f in findings]
