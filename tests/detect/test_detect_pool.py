"""The detection process pool alone: same findings as in-process detection, fail-closed
timeouts and crashes with the worker replaced, and a fair share per identity.

Real worker processes (forkserver) with the real detector and spaCy model; a policy recognizer
with a catastrophically backtracking regex stands in for pathological detection work.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest

from gateway.detect import (
    DetectionSpec,
    Detector,
    PatternSpec,
    RegexRecognizerSpec,
    SpecError,
    TextRef,
)
from gateway.detect.pool import DetectionPool, DetectorBusy, WorkerFailed

# (a+)+$ against "aaa…!" backtracks 2^n times: a worker on it never finishes by itself.
SLOW_SPEC = DetectionSpec(
    recognizers=(
        RegexRecognizerSpec(
            name="backtracking",
            entity_type="SLOW",
            patterns=(PatternSpec(name="nested", regex=r"(a+)+$", score=0.9),),
        ),
    )
)
SLOW_TEXT = (TextRef("messages[0].content", "a" * 40 + "!"),)
READY_S = 180.0  # a worker start loads spaCy: seconds on a busy machine


def _pool(**overrides: object) -> DetectionPool:
    options: dict[str, object] = {
        "processes": 1,
        "timeout_s": 60.0,
        "max_jobs": 64,
        "identity_max_chars": 1_000_000,
    }
    options.update(overrides)
    pool = DetectionPool(**options)  # type: ignore[arg-type]
    pool.start("default", DetectionSpec())
    return pool


@pytest.fixture(scope="module")
def pool() -> Iterator[DetectionPool]:
    """One worker, generous deadline: results and fairness, independent of machine load."""
    p = _pool()
    yield p
    p.close()


@pytest.fixture(scope="module")
def tight() -> Iterator[DetectionPool]:
    """One worker, a short deadline and small bounds: refusals and timeouts."""
    p = _pool(timeout_s=2.0, max_jobs=3, identity_max_chars=10_000)
    yield p
    p.close()


def _ready(pool: DetectionPool) -> None:
    assert pool.wait_ready(READY_S), "detection worker did not start"


def _replaced(pool: DetectionPool, old_pid: int) -> int | None:
    """The worker's pid once a new, warm worker replaced ``old_pid`` (bounded wait)."""
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        pids = pool.worker_pids()
        if len(pids) == 1 and old_pid not in pids and pool.wait_ready(0):
            return pids[0]
        time.sleep(0.05)
    return None


def _run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


CASES = [
    ("ssn", [TextRef("messages[0].content", "My SSN is 078-05-1120, please file it.")]),
    ("email-card", [TextRef("prompt", "Mail jane.roe@example.org, card 4111 1111 1111 1111.")]),
    (
        "ner-name",
        [TextRef("messages[0].content", "Yesterday Maria Lopez met Olaf Jensen in Oslo.")],
    ),
    ("clean", [TextRef("messages[0].content", "Summarize the quarterly report in three bullets.")]),
    (
        "split-over-messages",
        [
            TextRef("messages[0].content", "The first part of my SSN is 078-05"),
            TextRef("messages[1].content", "and the rest is 1120."),
        ],
    ),
    (
        "secret-and-tool-args",
        [
            TextRef("messages[0].content", "Use key AKIAIOSFODNN7EXAMPLE for the upload."),
            TextRef(
                "messages[1].tool_calls[0].function.arguments\x1f/email", "bob.smith@corp.example"
            ),
        ],
    ),
]


@pytest.mark.parametrize("texts", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_pool_findings_equal_in_process_detector(
    pool: DetectionPool, detector: Detector, texts: list[TextRef]
) -> None:
    """A worker process returns exactly the findings the in-process Detector returns."""
    _ready(pool)
    got = _run(pool.analyze("spiffe://t/svc/a", "default", DetectionSpec(), texts))
    assert got == detector.analyze(texts)


def test_pool_builds_the_detector_of_each_policy_version(pool: DetectionPool) -> None:
    """A new policy version's spec (its own recognizer) is used from its first request on,
    and the old version's detector is not."""
    _ready(pool)
    spec = DetectionSpec(
        recognizers=(
            RegexRecognizerSpec(
                name="ticket",
                entity_type="TICKET_ID",
                patterns=(PatternSpec(name="t", regex=r"\bTCK-\d{6}\b", score=0.9),),
            ),
        )
    )
    texts = [TextRef("prompt", "Please look at TCK-123456 today.")]
    before = _run(pool.analyze("spiffe://t/svc/a", "default", DetectionSpec(), texts))
    after = _run(pool.analyze("spiffe://t/svc/a", "v-ticket", spec, texts))
    assert [f.entity_type for f in before] == []
    assert after == Detector(spec).analyze(texts)
    assert [f.entity_type for f in after] == ["TICKET_ID"]


def test_invalid_policy_recognizer_fails_closed_naming_it(pool: DetectionPool) -> None:
    """A spec the worker cannot build raises detection's SpecError (naming the recognizer,
    never the text), and the next good request is served."""
    _ready(pool)
    bad = DetectionSpec(
        recognizers=(
            RegexRecognizerSpec(
                name="broken",
                entity_type="X",
                patterns=(PatternSpec(name="p", regex=r"(unclosed", score=0.5),),
            ),
        )
    )
    texts = [TextRef("prompt", "secret-looking text 078-05-1120")]
    with pytest.raises(SpecError) as caught:
        _run(pool.analyze("spiffe://t/svc/a", "v-bad", bad, texts))
    assert "broken" in caught.value.message
    assert "078-05-1120" not in caught.value.message
    good = _run(pool.analyze("spiffe://t/svc/a", "default", DetectionSpec(), texts))
    assert [f.entity_type for f in good] == ["US_SSN"]


def test_crashed_worker_fails_the_request_closed_and_is_replaced(pool: DetectionPool) -> None:
    """A worker killed mid-request fails that request (WorkerFailed, a DetectError: the router
    applies on_error), a new worker process takes its place and serves the next request."""
    _ready(pool)
    (old_pid,) = pool.worker_pids()

    async def crash() -> None:
        task = asyncio.ensure_future(pool.analyze("spiffe://t/svc/a", "slow", SLOW_SPEC, SLOW_TEXT))
        await asyncio.sleep(0.5)  # the worker is now inside the backtracking regex
        os.kill(old_pid, signal.SIGKILL)
        await task

    with pytest.raises(WorkerFailed):
        _run(crash())
    assert _replaced(pool, old_pid) is not None
    texts = [TextRef("prompt", "SSN 078-05-1120")]
    assert [
        f.entity_type
        for f in _run(pool.analyze("spiffe://t/svc/a", "default", DetectionSpec(), texts))
    ] == ["US_SSN"]


def test_timeout_fails_closed_and_kills_the_stuck_worker(tight: DetectionPool) -> None:
    """Detection that does not finish within timeout_s is a 503 detector_busy, and the worker
    stuck in it is killed and replaced (it does not keep a core busy)."""
    _ready(tight)
    (old_pid,) = tight.worker_pids()
    with pytest.raises(DetectorBusy) as caught:
        _run(tight.analyze("spiffe://t/svc/a", "slow", SLOW_SPEC, SLOW_TEXT))
    assert caught.value.status_code == 503
    assert caught.value.code == "detector_busy"
    assert caught.value.reason == "timeout"
    assert _replaced(tight, old_pid) is not None
    with pytest.raises(ProcessLookupError):
        os.kill(old_pid, 0)  # the stuck worker is gone (reaped), not left spinning


def test_round_robin_light_caller_is_not_queued_behind_a_heavy_one(pool: DetectionPool) -> None:
    """With one worker, a light caller's request submitted after five of a heavy caller's is
    served after at most the two the heavy caller already has at the head, not after all
    five (round-robin over identities, not first-come-first-served)."""
    _ready(pool)
    heavy_text = [TextRef("prompt", "Quarterly figures, Maria Lopez and Olaf Jensen. " * 80)]
    light_text = [TextRef("prompt", "Hello there.")]
    order: list[str] = []

    async def one(identity: str, tag: str, texts: list[TextRef]) -> None:
        await pool.analyze(identity, "default", DetectionSpec(), texts)
        order.append(tag)

    async def burst() -> None:
        jobs = [one("spiffe://t/svc/heavy", f"heavy{i}", heavy_text) for i in range(5)]
        jobs.append(one("spiffe://t/svc/light", "light", light_text))
        await asyncio.gather(*jobs)

    _run(burst())
    assert sorted(order) == sorted([f"heavy{i}" for i in range(5)] + ["light"])
    assert order.index("light") <= 2, order


def test_identity_share_refuses_the_heavy_caller_not_others(tight: DetectionPool) -> None:
    """Past its share of characters in flight (limits.detect_identity_max_chars), a caller's
    next request is refused at once with 503 detector_busy, while another caller's request of
    the same size is admitted; a caller with nothing in flight is always admitted."""
    _ready(tight)
    big = [TextRef("prompt", "Plain words without any identifier in them. " * 140)]  # ~6 k
    assert 5_000 < len(big[0].text) < 10_000

    async def burst() -> list[object]:
        return await asyncio.gather(
            tight.analyze("spiffe://t/svc/heavy", "default", DetectionSpec(), big),
            tight.analyze("spiffe://t/svc/heavy", "default", DetectionSpec(), big),
            tight.analyze("spiffe://t/svc/light", "default", DetectionSpec(), big),
            return_exceptions=True,
        )

    first, second, light = _run(burst())
    assert first == []
    assert isinstance(second, DetectorBusy)
    assert second.reason == "identity_share"
    assert "detect_identity_max_chars" in second.message
    assert light == []


def test_queue_bound_refuses_beyond_max_concurrent_detections(tight: DetectionPool) -> None:
    """More jobs than limits.max_concurrent_detections queued or running at once: the excess is
    refused at once (503 detector_busy), the admitted ones are served."""
    _ready(tight)
    small = [TextRef("prompt", "Short and clean.")]

    async def burst() -> list[object]:
        return await asyncio.gather(
            *(
                tight.analyze(f"spiffe://t/svc/c{i}", "default", DetectionSpec(), small)
                for i in range(5)
            ),
            return_exceptions=True,
        )

    results = _run(burst())
    refused = [r for r in results if isinstance(r, DetectorBusy)]
    assert len([r for r in results if r == []]) == 3
    assert len(refused) == 2
    assert {r.reason for r in refused} == {"queue_full"}


def test_closed_pool_refuses_work() -> None:
    """After close, a request is refused (503 detector_busy), never run unchecked."""
    p = DetectionPool(processes=1, timeout_s=5.0, max_jobs=4, identity_max_chars=1000)
    p.close()
    with pytest.raises(DetectorBusy) as caught:
        _run(p.analyze("spiffe://t/svc/a", "default", DetectionSpec(), [TextRef("p", "x")]))
    assert caught.value.reason == "closed"


def test_pool_starts_when_the_live_policy_spec_cannot_be_built() -> None:
    """A policy whose detection spec is broken does not keep workers from starting (they warm
    with the default spec): its requests fail closed with SpecError, a good spec is served."""
    bad = DetectionSpec(
        recognizers=(
            RegexRecognizerSpec(
                name="broken",
                entity_type="X",
                patterns=(PatternSpec(name="p", regex=r"[unclosed", score=0.5),),
            ),
        )
    )
    p = DetectionPool(processes=1, timeout_s=60.0, max_jobs=8, identity_max_chars=10**6)
    p.start("v-bad", bad)
    try:
        _ready(p)
        texts = [TextRef("prompt", "SSN 078-05-1120")]
        with pytest.raises(SpecError):
            _run(p.analyze("spiffe://t/svc/a", "v-bad", bad, texts))
        good = _run(p.analyze("spiffe://t/svc/a", "v-good", DetectionSpec(), texts))
        assert [f.entity_type for f in good] == ["US_SSN"]
    finally:
        p.close()
