"""The pii_dev corpus end to end through detection, sanitization (pseudonymize everything) and
restore: no structured identifier or secret survives on any surface, names and addresses leak
rarely, benign items are left alone, and an echoed answer restores to the original."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from gateway.detect import Detector, EntityGroup, entity_group, extract_texts
from gateway.sanitize import SSERestorer, restore_text, sanitize_body
from tests.detect.pii_match import body_text, leaked_values, load_corpus

_ITEMS = load_corpus() or []
_SURFACES = sorted({item["surface"] for item in _ITEMS if item["kind"] == "sensitive"})
# Dev-corpus leakage: names 3/61 before issue 13, 0/61 after; addresses 0/34. The goal is <= 2 %.
MAX_NAME_LEAK_RATE = 0.02
MAX_ADDRESS_LEAK_RATE = 0.02
MIN_BENIGN_MANAGED = 0.90


@pytest.fixture(scope="module")
def sanitized(detector: Detector, corpus: list[dict[str, Any]]) -> dict[str, Any]:
    """Every corpus item sanitized with the default operation (pseudonymize)."""
    out = {}
    for item in corpus:
        findings = detector.analyze(extract_texts(item["request"]))
        out[item["id"]] = (findings, sanitize_body(item["request"], findings, {}))
    return out


@pytest.mark.parametrize("surface", _SURFACES or ["(corpus absent)"], ids=lambda s: s)
def test_no_structured_or_secret_leaks(
    corpus: list[dict[str, Any]], sanitized: dict[str, Any], surface: str
) -> None:
    """After sanitizing, no structured identifier or secret of this surface matches the body."""
    leaks = []
    for item in corpus:
        if item["surface"] != surface:
            continue
        _, result = sanitized[item["id"]]
        for value in leaked_values(
            item, body_text(result.body), groups={"structured_id", "secret"}
        ):
            leaks.append((item["id"], value["class"], value["form"]))
    assert leaks == []


@pytest.mark.parametrize(
    ("group", "limit"),
    [("name", MAX_NAME_LEAK_RATE), ("address", MAX_ADDRESS_LEAK_RATE)],
    ids=["names", "addresses"],
)
def test_name_and_address_leakage_is_low(
    corpus: list[dict[str, Any]], sanitized: dict[str, Any], group: str, limit: float
) -> None:
    """Names and addresses that still match after sanitizing stay under the pinned rate."""
    total = leaked = 0
    for item in corpus:
        _, result = sanitized[item["id"]]
        values = [v for v in item["sensitive"] if v["group"] == group]
        total += len(values)
        leaked += len(leaked_values(item, body_text(result.body), groups={group}))
    assert total > 0
    assert leaked / total <= limit, f"{group}: {leaked}/{total} leaked"


def test_benign_items_have_no_structured_or_secret_findings(
    corpus: list[dict[str, Any]], sanitized: dict[str, Any]
) -> None:
    """Benign items (lookalikes, placeholders, public figures, code) are not over-blocked."""
    over: Counter[str] = Counter()
    for item in corpus:
        if item["kind"] != "benign":
            continue
        findings, _ = sanitized[item["id"]]
        for f in findings:
            if entity_group(f.entity_type) in (EntityGroup.STRUCTURED_ID, EntityGroup.SECRET):
                over[item["id"]] += 1
    assert dict(over) == {}


def test_rescan_finds_nothing_in_placeholders(
    detector: Detector, corpus: list[dict[str, Any]], sanitized: dict[str, Any]
) -> None:
    """Re-scanning every sanitized item with its placeholders masked finds nothing at or above
    the threshold (no request fails closed because of Bastion's own placeholders), and benign
    items all go managed under pseudonymize-everything (at least 90 % is the goal)."""
    failed_closed = []
    benign = managed = 0
    for item in corpus:
        _, result = sanitized[item["id"]]
        texts = extract_texts(result.body)
        again = detector.analyze(texts, placeholders=list(result.pseudonyms.placeholders()))
        if again:
            failed_closed.append((item["id"], sorted({f.entity_type for f in again})))
        if item["kind"] == "benign":
            benign += 1
            managed += not again
    assert failed_closed == []
    assert managed / benign >= MIN_BENIGN_MANAGED


def _last_user_text(body: dict[str, Any]) -> str:
    last = [m for m in body["messages"] if m.get("role") == "user"][-1]["content"]
    if isinstance(last, list):
        return "\n".join(p.get("text", "") for p in last if isinstance(p, dict))
    return str(last)


def test_echo_restores_exactly(corpus: list[dict[str, Any]], sanitized: dict[str, Any]) -> None:
    """An upstream echoing the sanitized last user message is restored to the original, whole
    and streamed in random 1-3 character SSE deltas, with no placeholder left."""
    rng = random.Random(4)
    mismatches = []
    for item in corpus:
        _, result = sanitized[item["id"]]
        echo = _last_user_text(result.body)
        whole = restore_text(echo, result.pseudonyms)
        restorer = SSERestorer(result.pseudonyms)
        parts, pos = [], 0
        while pos < len(echo):
            step = rng.randint(1, 3)
            chunk = {"choices": [{"index": 0, "delta": {"content": echo[pos : pos + step]}}]}
            parts.append(restorer.feed_chunk(chunk)["choices"][0]["delta"]["content"])
            pos += step
        parts.extend(restorer.flush().values())
        if whole != item["expected_echo"] or "".join(parts) != item["expected_echo"]:
            mismatches.append(item["id"])
    assert mismatches == []
