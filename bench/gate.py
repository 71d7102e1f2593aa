"""The gate's own cost and its effect on routing (issue 13), apart from detection itself.

    .venv/bin/python bench/gate.py [--runs 300] [--corpus]

Latency (p50/p95, ms) for a 1 KB and an 8 KB chat request of: decoding the bounded JSON body,
strict typed validation, reading the texts from the roles, rebuilding the outgoing body from
the typed request, and walking the serialized bytes for the egress scan (no detection).

``--corpus``: the shared pii_dev corpus under pseudonymize-everything, through the same steps
the pipeline runs for a managed route (detect, sanitize, rebuild, egress scan with Bastion's
tokens masked): how many items would fail closed on the egress scan, how many of those are
benign, and how many strings the egress scan had to send to the detector. Prints; asserts
nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.api.body import decode_json  # noqa: E402
from gateway.api.schemas import ChatCompletionRequest  # noqa: E402
from gateway.api.validation import parse_body  # noqa: E402
from gateway.detect.texts import dump_request, read_request  # noqa: E402
from gateway.sanitize.egress import egress_texts, mask_tokens, residual  # noqa: E402


def _request(size: int) -> bytes:
    sentence = "Please summarise the quarterly report for the logistics team. "
    text = (sentence * (size // len(sentence) + 1))[: size // 2]
    body = {
        "model": "chat-default",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": text},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "lookup",
                    "description": text[: size // 4],
                    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
                },
            }
        ],
        "metadata": {"team": "logistics"},
        "temperature": 0.2,
    }
    return json.dumps(body).encode()


def _time(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def latency(runs: int) -> None:
    print(f"{'step':<34} {'1 KB p50':>9} {'p95':>7} {'8 KB p50':>9} {'p95':>7}  (ms, {runs} runs)")
    rows: dict[str, list[tuple[float, float]]] = {}
    for size in (1024, 8192):
        raw = _request(size)
        decoded = decode_json(raw)
        typed = parse_body(ChatCompletionRequest, decoded)
        out = json.dumps(dump_request(typed), ensure_ascii=False).encode()
        steps: dict[str, Callable[[], Any]] = {
            "decode bounded JSON": lambda raw=raw: decode_json(raw),
            "strict typed validation": lambda d=decoded: parse_body(ChatCompletionRequest, d),
            "read texts from roles": lambda t=typed: read_request(t),
            "rebuild outgoing from typed": lambda t=typed: dump_request(t),
            "egress walk of serialized bytes": lambda o=out: egress_texts(o),
        }
        for name, fn in steps.items():
            rows.setdefault(name, []).append(_time(fn, runs))
    for name, ((a, b), (c, d)) in rows.items():
        print(f"{name:<34} {a:>9.3f} {b:>7.3f} {c:>9.3f} {d:>7.3f}")


def corpus() -> None:
    from gateway.detect import Detector
    from gateway.policy import load_policy
    from gateway.sanitize import sanitize_body
    from tests.detect.pii_match import load_corpus

    items = load_corpus()
    if not items:
        print("corpus: ../shared/pii_dev/pii_dev.jsonl not found")
        return
    policy = load_policy(REPO / "policies" / "default.yaml")
    detector = Detector(policy.detection)
    threshold = policy.threshold
    failed = benign_failed = scanned = 0
    for item in items:
        typed = parse_body(ChatCompletionRequest, {**item["request"], "model": "chat-default"})
        texts = read_request(typed).texts
        findings = detector.analyze(texts)
        result = sanitize_body(typed, findings, {}, extracted=texts)
        outgoing = dump_request(parse_body(ChatCompletionRequest, result.body))
        above = {f.path for f in findings if f.score >= threshold}
        clean = {r.text for r in texts if r.path not in above}
        serialized = json.dumps(outgoing, ensure_ascii=False).encode()
        egress = mask_tokens(egress_texts(serialized, known_clean=clean), result.tokens)
        scanned += len(egress)
        if egress and residual(detector.analyze(egress), egress, threshold):
            failed += 1
            benign_failed += item["kind"] == "benign"
    benign = sum(1 for i in items if i["kind"] == "benign")
    print(
        f"corpus: {len(items)} items; egress scan would fail closed on {failed} "
        f"({benign_failed} of {benign} benign); {scanned} strings sent to the detector by it"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--corpus", action="store_true")
    args = parser.parse_args()
    latency(args.runs)
    if args.corpus:
        corpus()


if __name__ == "__main__":
    main()
