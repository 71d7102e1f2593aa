"""Plaintext vs encrypted model load of the same model, in one run: seconds, MB/s, peak RSS.

    .venv/bin/python bench/model_load.py [--model-dir DIR] [--repeat 3]

Without ``--model-dir`` it imports SmolLM2-135M-Instruct from the installed GGUF (float32). It
creates a throwaway SoftHSM2 token, encrypts the model, then loads it in fresh subprocesses, one
per measurement, so each reports its own peak RSS (``ru_maxrss``):

- ``plaintext``: ``load_model_dir`` (read files into memory, same in-memory build);
- ``encrypted``: ``load_encrypted_model`` (HSM unwrap, AES-256-GCM decrypt into memory, build);
- ``hf-mmap``: ``AutoModelForCausalLM.from_pretrained(dir)`` for reference (mmap'd safetensors).

Goals (issue #6): encrypted ≤ 1.10 × plaintext time; peak RSS ≤ 1.3 × model size, counted above
the process's RSS after its imports (torch and transformers alone take a few hundred MB).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def _rss_now() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child(mode: str, path: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch  # noqa: F401
    import transformers

    from inference.artifact import load_encrypted_model, load_model_dir
    from pki.hsm import HsmConfig

    transformers.utils.logging.disable_progress_bar()
    # Import what every mode needs before the clock starts: lazy imports (tokenizers, jinja,
    # the llama modeling code) otherwise cost ~2 s and ~150 MB and would swamp the figures.
    import transformers.models.llama.modeling_llama
    from transformers import CONFIG_MAPPING, PreTrainedTokenizerFast  # noqa: F401
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING  # noqa: F401

    baseline = _rss_now()
    start = time.perf_counter()
    if mode == "plaintext":
        loaded = load_model_dir(path)
        size = loaded.stats.bytes
    elif mode == "encrypted":
        loaded = load_encrypted_model(path, HsmConfig.from_env())
        size = loaded.stats.bytes
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path))
        transformers.AutoTokenizer.from_pretrained(str(path))
        size = sum(p.stat().st_size for p in path.iterdir())
        del model
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "bytes": size, "baseline": baseline, "peak": peak}))


def _measure(mode: str, path: Path, env: dict[str, str]) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{mode} load failed:\n{proc.stderr[-2000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], Path(args.child[1]))
        return 0

    from inference.artifact import encrypt_model_dir, find_smollm2_gguf, import_gguf
    from pki.hsm import SOFTHSM_CONF_ENV, HsmSession, create_softhsm_token

    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        work = Path(tmp)
        model_dir = args.model_dir
        if model_dir is None:
            print("importing SmolLM2-135M-Instruct from the GGUF ...", file=sys.stderr)
            model_dir = import_gguf(find_smollm2_gguf(), work / "model")
        token = create_softhsm_token(work / "hsm", label="bench")
        env = {**os.environ, **token.env(), "PYTHONPATH": str(ROOT)}
        os.environ[SOFTHSM_CONF_ENV] = str(token.conf)
        artifact = work / "model.bmdl"
        start = time.perf_counter()
        with HsmSession(token.config()) as session:
            header = encrypt_model_dir(model_dir, artifact, session, model_id="bench")
        enc_s = time.perf_counter() - start
        size = header.plaintext_bytes
        print(
            f"model {model_dir.name}: {size / MB:.1f} MB; encrypt {enc_s:.2f} s "
            f"({size / MB / enc_s:.0f} MB/s); {header.chunk_count} chunks of "
            f"{header.chunk_size // MB} MB; {os.cpu_count()} CPUs"
        )
        runs: dict[str, list[dict[str, float]]] = {"plaintext": [], "encrypted": [], "hf-mmap": []}
        for _ in range(args.repeat):  # interleaved so page cache and load affect all alike
            runs["plaintext"].append(_measure("plaintext", model_dir, env))
            runs["encrypted"].append(_measure("encrypted", artifact, env))
            runs["hf-mmap"].append(_measure("hf-mmap", model_dir, env))

    print(
        f"{'mode':10} {'median s':>9} {'MB/s':>7} {'peak RSS MB':>12} {'above imports MB':>17} "
        f"{'x model':>8}"
    )
    medians: dict[str, float] = {}
    for mode, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        peak = statistics.median(r["peak"] for r in results)
        above = statistics.median(r["peak"] - r["baseline"] for r in results)
        medians[mode] = seconds
        print(
            f"{mode:10} {seconds:9.3f} {size / MB / seconds:7.0f} {peak / MB:12.0f} "
            f"{above / MB:17.0f} {above / size:8.2f}"
        )
    ratio = medians["encrypted"] / medians["plaintext"]
    print(f"encrypted / plaintext time: {ratio:.2f} (goal <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
