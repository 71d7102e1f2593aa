"""On-prem route through the gateway with one worker vs two (SmolLM2, same prompts), in one run.

    .venv/bin/python bench/worker_pool.py [--requests 32] [--max-tokens 64] [--model-dir DIR]

Prints aggregate completion tokens/s, TTFT p50/p99 and ITL p50 for each pool size, streamed
through the gateway over mTLS (policy-free static routing, so only the pool differs). Each
worker is its own process with torch threads = cores / workers, so one and two workers use the
same CPU in total: on a CPU-only 2-core host the second worker buys availability rather than
throughput; on GPU nodes each worker brings its own device. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import worker as wb  # noqa: E402  (bench/worker.py: the streaming driver and helpers)
from gateway_overhead import _free_port, _pki, _wait  # noqa: E402

from pki.tls import client_context  # noqa: E402


def _gateway(work: Path, ports: list[int]) -> tuple[subprocess.Popen[bytes], int, Any]:
    ca, s_cert, s_key, c_cert, c_key = _pki(work)
    port, ops_port = _free_port(), _free_port()
    urls = ", ".join(f"'http://127.0.0.1:{p}/v1'" for p in ports)
    (work / "gateway.yaml").write_text(
        f"server: {{host: 127.0.0.1, port: {port}, ops_port: {ops_port}, access_log: false, log_level: warning}}\n"
        f"tls: {{cert: {s_cert}, key: {s_key}, ca: {ca.cert_path}, crl: {ca.crl_path}}}\n"
        f"upstreams: {{pool: {{kind: onprem, base_url: [{urls}], model_map: {{chat-default: smollm2}}, timeout: {{read: 600}}}}}}\n"
        "models: {chat-default: {upstream: pool}}\n"
        "authorization: [{identity: 'spiffe://bastion.internal/*', models: ['*']}]\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(work / "gateway.yaml")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    _wait(f"http://127.0.0.1:{ops_port}/readyz")
    return process, port, client_context(ca=ca.cert_path, cert=c_cert, key=c_key)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--model-dir", type=Path)
    args = parser.parse_args()
    prompts = [wb.PROMPTS[i % len(wb.PROMPTS)] for i in range(args.requests)]
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-pool-") as tmp:
        work = Path(tmp)
        model_dir = args.model_dir
        if model_dir is None:
            from inference.artifact import find_smollm2_gguf, import_gguf

            model_dir = import_gguf(find_smollm2_gguf(), work / "smollm2")
        print(
            f"{cores} cores, {args.requests} streamed requests x max_tokens {args.max_tokens}, C={args.concurrency}"
        )
        print(
            f"{'workers':<8}{'tokens':>8}{'wall s':>9}{'tok/s':>9}{'TTFT p50':>10}{'TTFT p99':>10}{'ITL p50 ms':>12}"
        )
        for count in (1, 2):
            threads = max(1, cores // count)
            ports = [_free_port() for _ in range(count)]
            procs = [
                wb.start_worker(model_dir, work / f"w{count}-{i}", "float32", p, threads)
                for i, p in enumerate(ports)
            ]
            gateway = None
            try:
                for proc, p in zip(procs, ports, strict=True):
                    wb.wait_ready(
                        proc, f"http://127.0.0.1:{p}", work / f"w{count}-{ports.index(p)}"
                    )
                gateway, port, ctx = _gateway(work / f"g{count}", ports)
                url = f"https://127.0.0.1:{port}"
                asyncio.run(
                    wb.drive(url, prompts[:4], 8, 4, model="chat-default", verify=ctx)
                )  # warm
                r = asyncio.run(
                    wb.drive(
                        url,
                        prompts,
                        args.max_tokens,
                        args.concurrency,
                        model="chat-default",
                        verify=ctx,
                    )
                )
                tps = r["tokens"] / r["wall"]
                print(
                    f"{count:<8}{r['tokens']:>8}{r['wall']:>9.2f}{tps:>9.1f}{wb.pct(r['ttft'], 0.5):>10.3f}"
                    f"{wb.pct(r['ttft'], 0.99):>10.3f}{wb.pct(r['itl'], 0.5) * 1000:>12.1f}",
                    flush=True,
                )
            finally:
                for proc in [*procs, *([gateway] if gateway else [])]:
                    proc.terminate()
                    proc.wait(30)
                time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
