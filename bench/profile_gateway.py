"""Where a gateway request's CPU goes: py-spy samples of a running gateway under bench load.

Starts the echo upstream and one Bastion gateway (the variants of ``gateway_overhead.py``),
warms it up, attaches py-spy to the gateway (and its detection processes) only for the measured
load, then prints the share of samples per function (self and inclusive) and per area (TLS,
HTTP parsing, ASGI framework, audit, detection, ...). Asserts nothing.

    .venv/bin/python bench/profile_gateway.py --py-spy /tmp/perfvenv/bin/py-spy \\
        [--variant audit|policy|plain] [--size 200|4096] [--concurrency 1|16] [--requests 2000]

py-spy is not a Bastion dependency: install it anywhere (``python -m venv /tmp/perfvenv &&
/tmp/perfvenv/bin/pip install py-spy``) and pass its path. ``--raw FILE`` keeps the collapsed
stacks (flamegraph.pl / speedscope input).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import httpx2  # noqa: E402
from gateway_overhead import _round, prompt_body, start_stack  # noqa: E402

# Areas by file path fragment, first match wins (the order matters: specific before general).
_AREAS = (
    ("(ssl.py", "TLS (ssl module)"),
    ("asyncio/sslproto.py", "TLS (asyncio sslproto)"),
    ("(h11/", "HTTP/1.1 parsing (h11)"),
    ("uvicorn/", "uvicorn"),
    ("pki/asgi_tls.py", "peer identity (pki.asgi_tls)"),
    ("starlette/", "Starlette"),
    ("pydantic", "pydantic"),
    ("gateway/audit", "audit trail"),
    ("gateway/auditing.py", "audit trail"),
    ("rfc8785/", "audit trail"),
    ("sqlite3", "audit trail"),
    ("spacy/", "detection: spaCy"),
    ("thinc/", "detection: spaCy"),
    ("presidio_analyzer/", "detection: Presidio"),
    ("gateway/detect/pool.py", "detection pool IPC"),
    ("multiprocessing/", "detection pool IPC"),
    ("gateway/detect/", "detection: Bastion recognizers"),
    ("gateway/sanitize/", "sanitize"),
    ("gateway/policy/", "policy engine"),
    ("httpx2/", "upstream client (httpx2)"),
    ("httpcore2/", "upstream client (httpcore2)"),
    ("anyio/", "upstream client (anyio)"),
    ("gateway/upstreams/", "upstream adapter"),
    ("opentelemetry/", "telemetry"),
    ("trace/__init__", "telemetry"),
    ("context/contextvars_context", "telemetry"),
    ("gateway/telemetry.py", "telemetry"),
    ("prometheus_client/", "metrics"),
    ("(json/", "JSON"),
    ("gateway/", "gateway (other)"),
    ("asyncio/", "asyncio event loop"),
    ("concurrent/futures", "thread pool"),
    ("(threading.py", "threads"),
)


def _area(frame: str) -> str | None:
    for fragment, area in _AREAS:
        if fragment in frame:
            return area
    return None


def summarize(raw: Path, top: int) -> None:
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    area_counts: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            incl_counts[frame] += count
        # the innermost frame that belongs to a known area names the area of the sample
        area = next((a for a in map(_area, reversed(frames)) if a is not None), "other")
        area_counts[area] += count
    if not total:
        print("no samples")
        return
    print(f"{total} samples")
    print("\nby area (innermost known frame):")
    for area, count in area_counts.most_common():
        print(f"  {count / total:6.1%}  {area}")
    print(f"\ntop {top} self:")
    for frame, count in self_counts.most_common(top):
        print(f"  {count / total:6.1%}  {frame}")
    print(f"\ntop {top} inclusive:")
    for frame, count in incl_counts.most_common(top):
        print(f"  {count / total:6.1%}  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--py-spy", help="path of the py-spy binary")
    parser.add_argument(
        "--summarize", type=Path, metavar="RAW", help="only summarize collapsed stacks from a file"
    )
    parser.add_argument("--variant", default="policy", choices=("plain", "audit", "policy"))
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--raw", type=Path, help="keep the collapsed stacks here")
    parser.add_argument("--detect-processes", type=int, default=None)
    parser.add_argument(
        "--wall",
        action="store_true",
        help="sample threads that wait in I/O too (default: only the thread holding the GIL, "
        "i.e. Python CPU time)",
    )
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize, args.top)
        return
    if not args.py_spy:
        parser.error("--py-spy is required to profile")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        stack = start_stack(work, [args.variant], detect_processes=args.detect_processes)
        try:
            target = stack.targets[-1]
            assert target.pid is not None
            body = prompt_body(args.size)

            async def load(count: int) -> float:
                async with httpx2.AsyncClient(
                    timeout=60,
                    verify=stack.ctx,
                    limits=httpx2.Limits(max_connections=64, max_keepalive_connections=64),
                ) as client:
                    _, rate = await _round(client, target.url, body, args.concurrency, count)
                    return rate

            asyncio.run(load(100))  # warm-up, not sampled
            raw = args.raw or work / "profile.txt"
            spy = subprocess.Popen(
                [
                    args.py_spy,
                    "record",
                    "--pid",
                    str(target.pid),
                    "--subprocesses",
                    "--rate",
                    str(args.rate),
                    "--format",
                    "raw",
                    "--output",
                    str(raw),
                    "--nonblocking",
                    *([] if args.wall else ["--gil"]),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            asyncio.run(load(20))  # let py-spy attach
            rate = asyncio.run(load(args.requests))
            spy.send_signal(signal.SIGINT)
            _, err = spy.communicate(timeout=60)
            if not raw.exists():
                raise SystemExit(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")
            print(
                f"{args.variant}, {args.size} B, C={args.concurrency}: {args.requests} requests "
                f"at {rate:.0f} req/s; {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}"
            )
            summarize(raw, args.top)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
