"""Gateway overhead: the same client and upstream, direct vs through Bastion (mTLS, keep-alive).

Interleaved rounds at concurrency 1 and 16 with 200 B and 4 KB prompts; prints the latency Bastion
adds (p50/p99) and its throughput as a share of direct. Asserts nothing.

    .venv/bin/python bench/gateway_overhead.py [--requests 400] [--policy policies/default.yaml]

The upstream and the gateway each run in their own process (as in production), the client in
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, verify: object = True, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx2.get(url, verify=verify, timeout=1)  # type: ignore[arg-type]
            return
        except httpx2.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def _setup(
    work: Path, upstream_port: int, gateway_port: int, ops_port: int, policy: str | None
) -> tuple[Path, Path, Path, Path]:
    ca = CA.init(work / "pki", passphrase=Secret("bench-passphrase-123"))
    server = ca.issue_server(["127.0.0.1", "localhost"])
    s_cert, s_key = server.write(work / "server")
    client = ca.issue_client(["spiffe://bastion.internal/svc/bench"])
    c_cert, c_key = client.write(work / "client")
    lines = [
        f"server: {{host: 127.0.0.1, port: {gateway_port}, ops_port: {ops_port}, access_log: false, log_level: warning}}",
        f"tls: {{cert: {s_cert}, key: {s_key}, ca: {ca.cert_path}, crl: {ca.crl_path}}}",
        "upstreams:",
        f"  echo: {{kind: onprem, base_url: 'http://127.0.0.1:{upstream_port}/v1'}}",
        "models: {bench: {upstream: echo}}",
        "authorization: [{identity: 'spiffe://bastion.internal/*', models: ['*']}]",
    ]
    if policy:
        lines.append(f"policy: {{file: {Path(policy).resolve()}}}")
    config = work / "gateway.yaml"
    config.write_text("\n".join(lines) + "\n")
    return config, ca.cert_path, c_cert, c_key


async def _round(
    client: httpx2.AsyncClient, url: str, body: dict[str, object], concurrency: int, count: int
) -> tuple[list[float], float]:
    latencies: list[float] = []
    queue = list(range(count))

    async def worker() -> None:
        while queue:
            queue.pop()
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


async def _measure(
    args: argparse.Namespace, direct_url: str, bastion_url: str, ca: Path, cert: Path, key: Path
) -> None:
    ctx = client_context(ca=ca, cert=cert, key=key)
    limits = httpx2.Limits(max_connections=64, max_keepalive_connections=64)
    async with (
        httpx2.AsyncClient(limits=limits, timeout=60) as direct,
        httpx2.AsyncClient(verify=ctx, limits=limits, timeout=60) as bastion,
    ):
        print(
            f"{'prompt':>6} {'C':>3} | {'direct p50':>10} {'p99':>7} {'rps':>7} | {'bastion p50':>11} {'p99':>7} {'rps':>7} | {'added p50':>9} {'added p99':>9} {'ratio':>5}"
        )
        for size in (200, 4096):
            body = {
                "model": "bench",
                "messages": [{"role": "user", "content": ("lorem ipsum " * 400)[:size]}],
                "max_tokens": 16,
            }
            for concurrency in (1, 16):
                d_lat: list[float] = []
                b_lat: list[float] = []
                d_rps: list[float] = []
                b_rps: list[float] = []
                await _round(direct, direct_url, body, concurrency, 20)  # warm-up
                await _round(bastion, bastion_url, body, concurrency, 20)
                for _ in range(args.rounds):  # interleaved
                    lat, rps = await _round(
                        direct, direct_url, body, concurrency, args.requests // args.rounds
                    )
                    d_lat += lat
                    d_rps.append(rps)
                    lat, rps = await _round(
                        bastion, bastion_url, body, concurrency, args.requests // args.rounds
                    )
                    b_lat += lat
                    b_rps.append(rps)
                dp50, dp99, bp50, bp99 = (
                    _pct(d_lat, 0.5),
                    _pct(d_lat, 0.99),
                    _pct(b_lat, 0.5),
                    _pct(b_lat, 0.99),
                )
                dr, br = statistics.mean(d_rps), statistics.mean(b_rps)
                print(
                    f"{size:>5}B {concurrency:>3} | {dp50:>8.2f}ms {dp99:>5.1f}ms {dr:>7.0f} | {bp50:>9.2f}ms {bp99:>5.1f}ms {br:>7.0f} | {bp50 - dp50:>7.2f}ms {bp99 - dp99:>7.2f}ms {br / dr:>5.2f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="per cell, split over rounds")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--policy", help="a policy file: measures detection + policy on the path too"
    )
    args = parser.parse_args()
    upstream_port, gateway_port, ops_port = _free_port(), _free_port(), _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config, ca, cert, key = _setup(work, upstream_port, gateway_port, ops_port, args.policy)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        upstream = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "_echo_upstream.py"), str(upstream_port)], env=env
        )
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config)], env=env
        )
        try:
            _wait(f"http://127.0.0.1:{ops_port}/healthz")
            direct_url = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
            bastion_url = f"https://127.0.0.1:{gateway_port}/v1/chat/completions"
            print(
                f"python {sys.version.split()[0]}, {os.cpu_count()} cores; {args.requests} requests per cell, {args.rounds} interleaved rounds"
            )
            asyncio.run(_measure(args, direct_url, bastion_url, ca, cert, key))
        finally:
            for proc in (gateway, upstream):
                proc.terminate()
                proc.wait(10)


if __name__ == "__main__":
    main()
