"""Gateway overhead: the same client and upstream, direct vs through Bastion (mTLS, keep-alive).

Interleaved rounds at concurrency 1 and 16 with 200 B and 4 KB prompts; prints the latency each
Bastion variant adds (p50/p99) and its throughput as a share of direct. Asserts nothing.

    .venv/bin/python bench/gateway_overhead.py [--requests 400] [--variants plain,audit,policy,tracing]

Variants (each its own gateway process on the same echo upstream):
  plain    static routing, no audit trail
  audit    + the write-ahead SQLite audit trail (durable commit per request, group commit)
  policy   + detection and the default policy (clean prompts: managed route, sanitizer re-scan)
           + audit
  tracing  policy + OpenTelemetry spans exported to the console exporter's /dev/null sink

The upstream and the gateways run in their own processes (as in production), the client in
this one. Goal from issue #3: added p50 <= 1.5 ms at C=1, throughput ratio >= 0.5 at C=16.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pki.ca import CA  # noqa: E402
from pki.secret import Secret  # noqa: E402
from pki.tls import client_context  # noqa: E402

VARIANTS = ("plain", "audit", "policy", "tracing")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx2.get(url, timeout=1).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def _pki(work: Path) -> tuple[CA, Path, Path, Path, Path]:
    ca = CA.init(work / "pki", passphrase=Secret("bench-passphrase-123"))
    s_cert, s_key = ca.issue_server(["127.0.0.1", "localhost"]).write(work / "server")
    c_cert, c_key = ca.issue_client(["spiffe://bastion.internal/svc/bench"]).write(work / "client")
    return ca, s_cert, s_key, c_cert, c_key


def _config(
    work: Path, variant: str, ca: CA, s_cert: Path, s_key: Path, upstream_port: int
) -> tuple[Path, int, int]:
    port, ops_port = _free_port(), _free_port()
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    lines = [
        f"server: {{host: 127.0.0.1, port: {port}, ops_port: {ops_port}, access_log: false, log_level: warning}}",
        f"tls: {{cert: {s_cert}, key: {s_key}, ca: {ca.cert_path}, crl: {ca.crl_path}}}",
        "upstreams:",
        f"  worker: {{kind: onprem, base_url: '{upstream}'}}",
        f"  openai: {{kind: managed, base_url: '{upstream}'}}",
        "models: {bench: {upstream: worker}}",
        "authorization: [{identity: 'spiffe://bastion.internal/*', models: ['*']}]",
    ]
    if variant in ("audit", "policy", "tracing"):
        key = work / f"{variant}-digest.key"
        key.write_text("b" * 48)
        lines.append(
            f"audit: {{backend: sqlite, path: {work / (variant + '-audit.db')}, digest_key_file: {key}}}"
        )
        lines.append(f"signing: {{key_file: {work / (variant + '-signing.key')}}}")
    if variant in ("policy", "tracing"):
        lines.append(f"policy: {{file: {ROOT / 'policies' / 'default.yaml'}}}")
    if variant == "tracing":
        lines.append("tracing: {exporter: console}")
    path = work / f"{variant}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path, port, ops_port


async def _round(
    client: httpx2.AsyncClient, url: str, body: dict[str, object], concurrency: int, count: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    remaining = [count]

    async def worker() -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            start = time.perf_counter()
            response = await client.post(url, json=body)
            latencies.append(time.perf_counter() - start)
            if response.status_code != 200:
                raise SystemExit(f"{url}: HTTP {response.status_code}: {response.text[:200]}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, count / (time.perf_counter() - start)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _measure(args: argparse.Namespace, targets: dict[str, str], ctx: object) -> None:
    limits = httpx2.Limits(max_connections=64, max_keepalive_connections=64)
    clients = {
        name: httpx2.AsyncClient(
            limits=limits, timeout=60, verify=ctx if name != "direct" else True
        )  # type: ignore[arg-type]
        for name in targets
    }
    try:
        print(
            f"{'prompt':>6} {'C':>3} {'target':>8} | {'p50':>8} {'p99':>8} {'req/s':>7} | {'added p50':>9} {'added p99':>9} {'ratio':>5}"
        )
        for size in (200, 4096):
            text = (
                "The quarterly report covers revenue, costs and outlook for the next period. " * 80
            )[:size]
            body = {
                "model": "bench",
                "messages": [{"role": "user", "content": text}],
                "max_tokens": 16,
            }
            for concurrency in (1, 16):
                lat: dict[str, list[float]] = {name: [] for name in targets}
                rps: dict[str, list[float]] = {name: [] for name in targets}
                for name, url in targets.items():
                    await _round(clients[name], url, body, concurrency, 20)  # warm-up
                for _ in range(args.rounds):  # interleaved
                    for name, url in targets.items():
                        latencies, rate = await _round(
                            clients[name], url, body, concurrency, args.requests // args.rounds
                        )
                        lat[name] += latencies
                        rps[name].append(rate)
                d50, d99, drps = (
                    _pct(lat["direct"], 0.5),
                    _pct(lat["direct"], 0.99),
                    statistics.mean(rps["direct"]),
                )
                for name in targets:
                    p50, p99, rate = (
                        _pct(lat[name], 0.5),
                        _pct(lat[name], 0.99),
                        statistics.mean(rps[name]),
                    )
                    added = (
                        ""
                        if name == "direct"
                        else f"{p50 - d50:>7.2f}ms {p99 - d99:>7.2f}ms {rate / drps:>5.2f}"
                    )
                    print(
                        f"{size:>5}B {concurrency:>3} {name:>8} | {p50:>6.2f}ms {p99:>6.1f}ms {rate:>7.0f} | {added}"
                    )
    finally:
        for client in clients.values():
            await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--requests", type=int, default=400, help="per cell and target, split over rounds"
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--variants", default="plain", help=f"comma-separated from {','.join(VARIANTS)}"
    )
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    for variant in variants:
        if variant not in VARIANTS:
            raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    upstream_port = _free_port()
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ca, s_cert, s_key, c_cert, c_key = _pki(work)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        try:
            processes.append(
                subprocess.Popen(
                    [sys.executable, str(ROOT / "bench" / "_echo_upstream.py"), str(upstream_port)],
                    env=env,
                )
            )
            targets = {"direct": f"http://127.0.0.1:{upstream_port}/v1/chat/completions"}
            for variant in variants:
                config, port, ops_port = _config(work, variant, ca, s_cert, s_key, upstream_port)
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
                        env=env,
                        stdout=subprocess.DEVNULL if variant == "tracing" else None,
                    )
                )
                _wait(f"http://127.0.0.1:{ops_port}/readyz")
                targets[variant] = f"https://127.0.0.1:{port}/v1/chat/completions"
            print(
                f"python {sys.version.split()[0]}, {os.cpu_count()} cores; {args.requests} requests per cell and target, {args.rounds} interleaved rounds"
            )
            ctx = client_context(ca=ca.cert_path, cert=c_cert, key=c_key)
            asyncio.run(_measure(args, targets, ctx))
        finally:
            for process in reversed(processes):
                process.terminate()
                process.wait(30)


if __name__ == "__main__":
    main()
