"""Detection benchmark: latency for 1 KB and 8 KB prompts, and recall/precision per group on the
pii_dev corpus, for Bastion's detector next to plain Presidio defaults, in the same run.

    .venv/bin/python bench/detect.py [--runs 200] [--repeat 3] [--corpus PATH] [--no-presidio]

Recall: a labelled value counts as found when, after sanitizing with pseudonymize-everything, it
no longer matches the request (the corpus README's matching rules). Precision: findings whose span
overlaps a labelled value's span, over all findings of that group (benign items only have false
positives). Also: the leak rate on the hand-written name sets of ``tests/detect/names_independent``
(not from the corpus generator), and, for Bastion, how many items would fail closed on the
re-scan of their sanitized body (placeholders masked) and how many benign items go managed under
pseudonymize-everything. Latency is measured ``--repeat`` times (the machine may be shared: look
at the spread, not one figure). Prints tables; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.detect import (  # noqa: E402
    DetectionSpec,
    Detector,
    Finding,
    TextRef,
    entity_group,
    extract_texts,
)
from gateway.detect.engine import build_presidio_defaults  # noqa: E402
from gateway.sanitize import sanitize_body  # noqa: E402
from tests.detect.names_independent import (  # noqa: E402
    BLIND_SENTENCES,
    NAMED_SENTENCES,
    leaked_names,
)
from tests.detect.pii_match import CORPUS_PATH, body_text, leaked_values, load_corpus  # noqa: E402

GROUPS = ("structured_id", "secret", "name", "address")
Analyze = Callable[[Sequence[TextRef]], list[Finding]]


def presidio_analyze(engine: Any) -> Analyze:
    """Presidio defaults as a Detector-like function (Presidio types map to Bastion groups)."""

    def analyze(texts: Sequence[TextRef]) -> list[Finding]:
        findings = []
        for ref in texts:
            for r in engine.analyze(ref.text, language="en"):
                if r.score >= 0.5:
                    findings.append(
                        Finding(r.entity_type, r.score, ref.path, r.start, r.end, "presidio")
                    )
        return findings

    return analyze


def prompts(items: list[dict[str, Any]], size: int, count: int, seed: int) -> list[str]:
    """Prompts of about ``size`` characters glued from corpus texts (sensitive and benign)."""
    rng = random.Random(seed)
    pool = [ref.text for item in items for ref in extract_texts(item["request"]) if ref.text]
    out = []
    for _ in range(count):
        parts: list[str] = []
        while sum(len(p) + 1 for p in parts) < size:
            parts.append(rng.choice(pool))
        out.append("\n".join(parts)[:size])
    return out


def latency(analyze: Analyze, texts: list[str]) -> tuple[float, float, float]:
    """Wall-clock p50 and p99, and the p50 of the process's CPU time, in ms. On a shared machine
    the wall clock includes waiting for a core; CPU time is closer to what an idle core takes."""
    for text in texts[:5]:  # warm-up
        analyze([TextRef("p", text)])
    times = []
    cpu = []
    for text in texts:
        start = time.perf_counter()
        start_cpu = time.process_time()
        analyze([TextRef("p", text)])
        cpu.append((time.process_time() - start_cpu) * 1000)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return statistics.median(times), p99, statistics.median(cpu)


def _value_spans(item: dict[str, Any], ref: TextRef) -> list[tuple[int, int]]:
    spans = []
    for value in item["sensitive"]:
        pieces = [p if isinstance(p, str) else p.get("key", "") for p in value.get("parts", [])]
        for piece in [value["value"], *pieces]:
            start = ref.text.find(piece) if piece else -1
            while start >= 0:
                spans.append((start, start + len(piece)))
                start = ref.text.find(piece, start + 1)
    return spans


def quality(analyze: Analyze, items: list[dict[str, Any]]) -> dict[str, tuple[int, int, int, int]]:
    """Per group: (values, found, findings, true findings); plus benign over-blocking."""
    values: Counter[str] = Counter()
    found: Counter[str] = Counter()
    findings_n: Counter[str] = Counter()
    true_n: Counter[str] = Counter()
    for item in items:
        refs = extract_texts(item["request"])
        findings = analyze(refs)
        sanitized = sanitize_body(item["request"], findings, {}).body
        leaked = {id(v) for v in leaked_values(item, body_text(sanitized))}
        for value in item["sensitive"]:
            values[value["group"]] += 1
            found[value["group"]] += id(value) not in leaked
        spans = {ref.path: _value_spans(item, ref) for ref in refs}
        for f in findings:
            group = str(entity_group(f.entity_type))
            findings_n[group] += 1
            true_n[group] += any(s < f.end and f.start < e for s, e in spans.get(f.path, []))
    return {g: (values[g], found[g], findings_n[g], true_n[g]) for g in GROUPS}


def rescan(detector: Detector, items: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(items failing closed on the re-scan, benign items, benign items that go managed) under
    pseudonymize-everything: the sanitized body re-scanned with its placeholders masked."""
    failed = benign = managed = 0
    for item in items:
        findings = detector.analyze(extract_texts(item["request"]))
        result = sanitize_body(item["request"], findings, {})
        again = detector.analyze(
            extract_texts(result.body), placeholders=list(result.pseudonyms.placeholders())
        )
        failed += bool(again)
        if item["kind"] == "benign":
            benign += 1
            managed += not again
    return failed, benign, managed


def benign_overblock(analyze: Analyze, items: list[dict[str, Any]]) -> int:
    blocked = 0
    for item in items:
        if item["kind"] != "benign":
            continue
        groups = {str(entity_group(f.entity_type)) for f in analyze(extract_texts(item["request"]))}
        blocked += bool(groups & {"structured_id", "secret"})
    return blocked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="prompts per size (default 200)")
    parser.add_argument("--corpus", type=Path, default=CORPUS_PATH)
    parser.add_argument("--repeat", type=int, default=3, help="latency measurements (default 3)")
    parser.add_argument("--no-presidio", action="store_true", help="Bastion's detector only")
    args = parser.parse_args()
    items = load_corpus(args.corpus)
    if items is None:
        print(f"corpus not found at {args.corpus}; nothing to measure")
        return 1
    started = time.perf_counter()
    detector = Detector(DetectionSpec())
    bastion = detector.analyze
    print(f"Bastion detector ready in {time.perf_counter() - started:.1f} s")
    systems: list[tuple[str, Analyze]] = [("bastion", bastion)]
    if not args.no_presidio:
        started = time.perf_counter()
        systems.append(("presidio-defaults", presidio_analyze(build_presidio_defaults())))
        print(f"Presidio defaults ready in {time.perf_counter() - started:.1f} s")

    print(f"\nlatency, ms ({args.runs} prompts per size, one text per request)")
    print(
        f"{'system':<18} {'run':>3} {'1KB p50':>8} {'1KB p99':>8} {'cpu p50':>8} "
        f"{'8KB p50':>8} {'8KB p99':>8} {'cpu p50':>8}"
    )
    small = prompts(items, 1024, args.runs, seed=1)
    large = prompts(items, 8192, args.runs, seed=2)
    for run in range(1, args.repeat + 1):
        for name, analyze in systems:
            p50_s, p99_s, cpu_s = latency(analyze, small)
            p50_l, p99_l, cpu_l = latency(analyze, large)
            print(
                f"{name:<18} {run:>3} {p50_s:>8.1f} {p99_s:>8.1f} {cpu_s:>8.1f} "
                f"{p50_l:>8.1f} {p99_l:>8.1f} {cpu_l:>8.1f}"
            )

    print(f"\nquality on pii_dev ({len(items)} items)")
    print(
        f"{'system':<18} {'group':<14} {'values':>6} {'recall':>7} {'findings':>8} {'precision':>9}"
    )
    for name, analyze in systems:
        for group, (n, hit, total, true) in quality(analyze, items).items():
            recall = hit / n if n else 0.0
            precision = true / total if total else 0.0
            print(f"{name:<18} {group:<14} {n:>6} {recall:>7.1%} {total:>8} {precision:>9.1%}")
        benign = sum(item["kind"] == "benign" for item in items)
        blocked = benign_overblock(analyze, items)
        print(f"{name:<18} benign items with a structured/secret finding: {blocked}/{benign}")
    failed, benign, managed = rescan(detector, items)
    print(
        f"bastion            re-scan of the sanitized body fails closed: {failed}/{len(items)}; "
        f"benign -> managed (pseudonymize-everything): {managed}/{benign}"
    )

    print("\nnames leaked on the hand-written sets (pseudonymize-everything)")
    for name, analyze in systems:
        for label, sentences in (("named", NAMED_SENTENCES), ("blind", BLIND_SENTENCES)):
            leaked = len(leaked_names(analyze, sentences))
            rate = leaked / len(sentences)
            print(f"{name:<18} {label:<6} {leaked:>3}/{len(sentences):<3} {rate:>6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
