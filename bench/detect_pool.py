"""Detection throughput: the in-process thread pool (one core wide, the GIL) against the process
pool (``gateway.detect.pool``) with 1..N worker processes, same texts, same concurrency.

    .venv/bin/python bench/detect_pool.py [--max-processes 2] [--requests 400] [--concurrency 16]
        [--size 4096] [--callers 1]

Prints requests/s, p50/p99 latency and the speed-up over one process. With ``--callers 2`` the
load comes from two identities (round-robin dispatch), otherwise from one. Asserts nothing.
On a machine shared with other work the figures are noisy: compare rows of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.detect import DetectionSpec, Detector, TextRef  # noqa: E402
from gateway.detect.pool import DetectionPool  # noqa: E402

# The gateway bench's prompt (regex recognizers only) and one with a name in each sentence
# (spaCy NER runs over those sentences: ~15 ms per KB of them on one core).
_TEXT = "The quarterly report covers revenue, costs and outlook for the next period. "
_NAMES = "My colleague Maria Lopez said the invoice from March was wrong; check order 4411-2. "


def _texts(size: int, names: bool) -> list[TextRef]:
    unit = _NAMES if names else _TEXT
    return [TextRef("messages[0].content", (unit * (size // len(unit) + 1))[:size])]


async def _drive(
    call: Callable[[str], Awaitable[None]], concurrency: int, requests: int, callers: int
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    remaining = [requests]

    async def worker(k: int) -> None:
        identity = f"spiffe://bench/svc/c{k % callers}"
        while remaining[0] > 0:
            remaining[0] -= 1
            start = time.perf_counter()
            await call(identity)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return requests / (time.perf_counter() - start), latencies


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--max-processes", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--callers", type=int, default=1)
    parser.add_argument("--names", action="store_true", help="name-dense texts (spaCy NER)")
    args = parser.parse_args()
    texts = _texts(args.size, args.names)
    spec = DetectionSpec()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f}; {args.size} B {'name-dense ' if args.names else ''}texts, C={args.concurrency}, "
        f"{args.requests} requests, {args.callers} caller(s)"
    )
    print(f"{'detection':>22} | {'req/s':>7} {'p50':>8} {'p99':>8} {'speed-up':>8}")

    detector = Detector(spec)
    detector.analyze(texts)
    threads = ThreadPoolExecutor(max_workers=8)

    async def in_threads(identity: str) -> None:
        await asyncio.get_running_loop().run_in_executor(threads, detector.analyze, texts)

    rate, lat = asyncio.run(_drive(in_threads, args.concurrency, args.requests, args.callers))
    threads.shutdown()
    print(
        f"{'threads (8, 1 process)':>22} | {rate:>7.1f} {_pct(lat, 0.5):>6.1f}ms "
        f"{_pct(lat, 0.99):>6.1f}ms {'':>8}"
    )
    base = None
    for n in range(1, args.max_processes + 1):
        pool = DetectionPool(processes=n, timeout_s=120.0, max_jobs=1024, identity_max_chars=10**9)
        pool.start("bench", spec)
        try:

            async def in_pool(identity: str, pool: DetectionPool = pool) -> None:
                await pool.analyze(identity, "bench", spec, texts)

            asyncio.run(_drive(in_pool, args.concurrency, 40, args.callers))  # warm
            rate, lat = asyncio.run(_drive(in_pool, args.concurrency, args.requests, args.callers))
        finally:
            pool.close()
        base = base or rate
        print(
            f"{f'{n} process(es)':>22} | {rate:>7.1f} {_pct(lat, 0.5):>6.1f}ms "
            f"{_pct(lat, 0.99):>6.1f}ms {rate / base:>7.2f}x"
        )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
