"""Gateway overhead: the same client and upstream, direct vs through a gateway (keep-alive).

Interleaved rounds (direct, then each gateway, repeated) at concurrency 1 and 16 with 200 B and
4 KiB prompts, on one echo upstream; the client runs in this process, the upstream and each
gateway in their own. Prints, per cell, p50/p99 and req/s, then issue #17's table: latency each
gateway adds at C=1 (p50, p99), its throughput as a share of direct at C=16, and the gateway's
CPU seconds per request (utime+stime from /proc of the gateway process and every process under
it, e.g. the detection pool, over all of that row's measured requests at C=1 and C=16).
Asserts nothing.

    .venv/bin/python bench/gateway_overhead.py [--requests 400] [--rounds 4]
        [--litellm /tmp/litellm-venv/bin/litellm] [--variants plain,tracing]
        [--detect-processes N]

Table rows (each its own gateway process on the same echo upstream):
  LiteLLM            only with --litellm BIN: plain HTTP proxy, no audit, no scan
  no policy          Bastion: mTLS, static routing, write-ahead SQLite audit trail
  default 200 B      + detection and policies/default.yaml (clean prompt: managed route)
  default 4 KiB      the same gateway, 4 KiB prompt
Extra variants (``--variants``), also at 200 B: ``plain`` (no audit trail), ``tracing`` (policy +
OpenTelemetry spans to the console exporter, sent to /dev/null).

Targets from issue #17 (quiet 2-core machine): no policy <= 1.0 ms CPU/request, added p50
<= 1.5 ms at C=1, ratio >= 0.5 at C=16; default policy 4 KiB <= 5 ms CPU/request, ratio >= 0.2.
On a shared machine the figures are noisy: compare rows of one run, not runs.
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pki.ca import CA  # noqa: E402
from pki.secret import Secret  # noqa: E402
from pki.tls import client_context  # noqa: E402

VARIANTS = ("plain", "audit", "policy", "tracing")
SIZES = (200, 4096)
CONCURRENCY = (1, 16)
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, timeout: float = 600, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"{url}: the process exited with status {process.returncode}")
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
    work: Path,
    variant: str,
    ca: CA,
    s_cert: Path,
    s_key: Path,
    upstream_port: int,
    *,
    detect_processes: int | None = None,
) -> tuple[Path, int, int]:
    name, variant = variant, variant.partition("+")[0]  # "audit+fastlib": files apart
    port, ops_port = _free_port(), _free_port()
    upstream = f"http://127.0.0.1:{upstream_port}/v1"
    lines = [
        f"server: {{host: 127.0.0.1, port: {port}, ops_port: {ops_port}, access_log: false, log_level: warning}}",
        f"tls: {{cert: {s_cert}, key: {s_key}, ca: {ca.cert_path}, crl: {ca.crl_path}}}",
        "upstreams:",
        f"  worker: {{kind: onprem, base_url: '{upstream}'}}",
        f"  openai: {{kind: managed, base_url: '{upstream}'}}",
        "models: {bench: {upstream: worker}}",
        "authorization: [{identity: 'spiffe://bastion.internal/**', models: ['**']}]",
    ]
    if detect_processes is not None and variant in ("policy", "tracing"):
        lines.append(f"limits: {{detect_processes: {detect_processes}}}")
    if variant in ("audit", "policy", "tracing"):
        key = work / f"{name}-digest.key"
        key.write_text("b" * 48)
        lines.append(
            f"audit: {{backend: sqlite, path: {work / (name + '-audit.db')}, digest_key_file: {key}}}"
        )
        lines.append(f"signing: {{key_file: {work / (name + '-signing.key')}}}")
    if variant in ("policy", "tracing"):
        lines.append(f"policy: {{file: {ROOT / 'policies' / 'default.yaml'}}}")
    if variant == "tracing":
        lines.append("tracing: {exporter: console}")
    path = work / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path, port, ops_port


def _litellm_config(work: Path, upstream_port: int) -> Path:
    path = work / "litellm.yaml"
    path.write_text(
        "model_list:\n"
        "  - model_name: bench\n"
        "    litellm_params:\n"
        "      model: openai/bench\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: bench-not-a-key\n"
        "litellm_settings: {telemetry: false, drop_params: true}\n"
    )
    return path


# -- CPU of a process tree ------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                out.extend(int(c) for c in handle.read().split())
    except OSError:
        pass
    return out


def _tree(pid: int) -> Iterator[int]:
    stack = [pid]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(_children(current))


def _cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` and every live process under it (the detection pool, too)."""
    total = 0
    for member in _tree(pid):
        try:
            with open(f"/proc/{member}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / _CLK_TCK


# -- load -----------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str
    pid: int | None  # the gateway process (None: direct)
    tls: bool
    sizes: tuple[int, ...]
    label: str = ""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Cell:
    latencies: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    cpu: float = 0.0
    requests: int = 0


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


def prompt_body(size: int) -> dict[str, object]:
    text = ("The quarterly report covers revenue, costs and outlook for the next period. " * 80)[
        :size
    ]
    return {"model": "bench", "messages": [{"role": "user", "content": text}], "max_tokens": 16}


async def measure(
    targets: list[Target], ctx: Any, *, requests: int, rounds: int
) -> dict[tuple[str, int, int], Cell]:
    """Interleaved rounds per (size, concurrency); returns cells keyed (target, size, C)."""
    limits = httpx2.Limits(max_connections=64, max_keepalive_connections=64)
    clients = {
        t.name: httpx2.AsyncClient(
            limits=limits, timeout=60, verify=ctx if t.tls else True, headers=t.headers
        )
        for t in targets
    }
    cells: dict[tuple[str, int, int], Cell] = {}
    try:
        print(
            f"{'prompt':>6} {'C':>3} {'target':>10} | {'p50':>8} {'p99':>8} {'req/s':>7} {'cpu/req':>8}"
        )
        for size in SIZES:
            body = prompt_body(size)
            here = [t for t in targets if size in t.sizes]
            for concurrency in CONCURRENCY:
                for t in here:
                    await _round(clients[t.name], t.url, body, concurrency, 20)  # warm-up
                for _ in range(rounds):
                    for t in here:
                        cell = cells.setdefault((t.name, size, concurrency), Cell())
                        before = _cpu_seconds(t.pid) if t.pid else 0.0
                        latencies, rate = await _round(
                            clients[t.name], t.url, body, concurrency, requests // rounds
                        )
                        if t.pid:
                            cell.cpu += _cpu_seconds(t.pid) - before
                        cell.latencies += latencies
                        cell.rates.append(rate)
                        cell.requests += len(latencies)
                for t in here:
                    cell = cells[(t.name, size, concurrency)]
                    cpu = f"{cell.cpu / cell.requests * 1000:>6.2f}ms" if t.pid else ""
                    print(
                        f"{size:>5}B {concurrency:>3} {t.name:>10} | {_pct(cell.latencies, 0.5):>6.2f}ms "
                        f"{_pct(cell.latencies, 0.99):>6.1f}ms {statistics.mean(cell.rates):>7.0f} {cpu}"
                    )
    finally:
        for client in clients.values():
            await client.aclose()
    return cells


def print_table(targets: list[Target], cells: dict[tuple[str, int, int], Cell]) -> None:
    print()
    print(
        "| gateway | prompt | added p50 C=1 | added p99 C=1 | throughput ratio to direct, C=16 "
        "| CPU per request |"
    )
    print("|---|---|---|---|---|---|")
    for t in targets:
        if t.pid is None:
            continue
        for size in t.sizes:
            d1, g1 = cells[("direct", size, 1)], cells[(t.name, size, 1)]
            d16, g16 = cells[("direct", size, 16)], cells[(t.name, size, 16)]
            added50 = _pct(g1.latencies, 0.5) - _pct(d1.latencies, 0.5)
            added99 = _pct(g1.latencies, 0.99) - _pct(d1.latencies, 0.99)
            ratio = statistics.mean(g16.rates) / statistics.mean(d16.rates)
            cpu = (g1.cpu + g16.cpu) / (g1.requests + g16.requests) * 1000
            prompt = "4 KiB" if size == 4096 else f"{size} B"
            print(
                f"| {t.label or t.name} | {prompt} | {added50:.1f} ms | {added99:.1f} ms "
                f"| {ratio:.3f} | {cpu:.1f} ms |"
            )


@dataclass
class Stack:
    """The echo upstream and the gateways under test, as processes."""

    work: Path
    upstream_port: int
    ctx: Any
    targets: list[Target]
    processes: list[subprocess.Popen[bytes]]

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


_LABELS = {
    "plain": "Bastion, no audit, no policy",
    "audit": "Bastion, no policy (mTLS, write-ahead audit)",
    "policy": "Bastion, default policy",
    "tracing": "Bastion, default policy + tracing",
}


def start_stack(
    work: Path,
    variants: list[str],
    *,
    litellm: str | None = None,
    detect_processes: int | None = None,
    gateway_prefix: list[str] | None = None,
) -> Stack:
    """Start the upstream, LiteLLM (if given) and one Bastion gateway per variant; wait ready.

    ``gateway_prefix`` wraps each gateway command (e.g. a profiler); the measured pid is then
    the wrapper's, whose tree holds the gateway.
    """
    ca, s_cert, s_key, c_cert, c_key = _pki(work)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    upstream_port = _free_port()
    processes: list[subprocess.Popen[bytes]] = []
    stack = Stack(work, upstream_port, None, [], processes)
    try:
        processes.append(
            subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "_echo_upstream.py"), str(upstream_port)],
                env=env,
            )
        )
        stack.targets.append(
            Target(
                "direct",
                f"http://127.0.0.1:{upstream_port}/v1/chat/completions",
                None,
                False,
                SIZES,
            )
        )
        _wait(f"http://127.0.0.1:{upstream_port}/healthz")
        if litellm:
            port = _free_port()
            config = _litellm_config(work, upstream_port)
            litellm_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            litellm_env["LITELLM_TELEMETRY"] = "False"
            # LiteLLM refuses to start without a master key; callers then send it as Bearer.
            master_key = "sk-bench-" + os.urandom(16).hex()
            litellm_env["LITELLM_MASTER_KEY"] = master_key
            process = subprocess.Popen(
                [litellm, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
                env=litellm_env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            processes.append(process)
            _wait(f"http://127.0.0.1:{port}/health/liveliness", process=process)
            stack.targets.append(
                Target(
                    "litellm",
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    process.pid,
                    False,
                    (200,),
                    "LiteLLM (plain HTTP, no audit, no scan)",
                    {"authorization": f"Bearer {master_key}"},
                )
            )
        for spec in variants:
            # "audit:/tmp/fastlib": the audit variant with /tmp/fastlib first on its PYTHONPATH
            # (try a sitecustomize.py that installs uvloop, say) beside the plain one.
            variant, _, extra_path = spec.partition(":")
            name = f"{variant}+{Path(extra_path).name}" if extra_path else variant
            config, port, ops_port = _config(
                work, name, ca, s_cert, s_key, upstream_port, detect_processes=detect_processes
            )
            command = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
            gateway_env = dict(env)
            if extra_path:
                gateway_env["PYTHONPATH"] = f"{extra_path}:{env['PYTHONPATH']}"
            process = subprocess.Popen(
                [*(gateway_prefix or []), *command],
                env=gateway_env,
                stdout=subprocess.DEVNULL if variant == "tracing" else None,
            )
            processes.append(process)
            _wait(f"http://127.0.0.1:{ops_port}/readyz", process=process)
            stack.targets.append(
                Target(
                    name,
                    f"https://127.0.0.1:{port}/v1/chat/completions",
                    process.pid,
                    True,
                    SIZES if variant == "policy" else (200,),
                    _LABELS[variant] + (f" + {extra_path}" if extra_path else ""),
                )
            )
        stack.ctx = client_context(ca=ca.cert_path, cert=c_cert, key=c_key)
    except BaseException:
        stack.stop()
        raise
    return stack


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--requests", type=int, default=400, help="per cell and target, split over rounds"
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--litellm", metavar="BIN", help="a LiteLLM proxy binary: adds its row")
    parser.add_argument(
        "--variants",
        default="",
        help="extra Bastion variants beside audit and policy: plain, tracing; NAME:DIR runs "
        "variant NAME again with DIR first on its PYTHONPATH",
    )
    parser.add_argument(
        "--detect-processes",
        type=int,
        default=None,
        help="limits.detect_processes for the policy gateways (default: the config default)",
    )
    args = parser.parse_args()
    extra = [v for v in args.variants.split(",") if v]
    for variant in extra:
        if variant.partition(":")[0] not in VARIANTS:
            raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    variants = ["audit", "policy", *(v for v in extra if v not in ("audit", "policy"))]
    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(
            Path(tmp), variants, litellm=args.litellm, detect_processes=args.detect_processes
        )
        try:
            print(
                f"python {sys.version.split()[0]}, {os.cpu_count()} cores, load average "
                f"{os.getloadavg()[0]:.2f}; {args.requests} requests per cell and target, "
                f"{args.rounds} interleaved rounds"
            )
            cells = asyncio.run(
                measure(stack.targets, stack.ctx, requests=args.requests, rounds=args.rounds)
            )
            print_table(stack.targets, cells)
            print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
