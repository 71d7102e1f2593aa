"""Weight-only quantization on CPU, and the quality report an operator reads before serving it.

Methods (``runtime.quantization`` and ``bastion model quantize --method``):

- ``int8``: every Linear weight as int8 with one float scale per output channel (symmetric);
  activations stay bfloat16. Kernel: ``torch.ops.aten._weight_int8pack_mm``.
- ``int4``: 4-bit weights with a scale and zero point per group of ``INT4_GROUP`` input
  channels (asymmetric); activations bfloat16. Kernel: ``_weight_int4pack_mm_for_cpu``.
- ``bf16`` (report only; serve it with ``runtime.dtype: bfloat16``): the bfloat16 model itself.

The earlier dynamic int8 (activations quantized per batch at run time) is gone: on SmolLM2-135M
it raised eval perplexity 25.7 -> 31.3 (greedy agreement 40.6 %). Weight-only keeps activations
in floating point, which is where that loss came from.

``bastion model quantize SRC --method int8 --out FILE`` loads SRC (a plaintext model directory,
or an encrypted artifact opened through the HSM named by ``BASTION_HSM_*``), quantizes a copy,
and measures what was traded against the float32 model: perplexity on a bundled English text
(``data/eval.txt``) before and after, teacher-forced top-1 agreement, greedy continuations
compared token by token, and the bytes of Linear weights. FILE receives the report as JSON.

The quantized weights are deliberately not written: they would be a second, plaintext copy of
the model on disk. Quantization is deterministic from the original weights, so the worker
applies it at load time (``runtime.quantization``) to the decrypted encrypted artifact, and this
report describes exactly what it will serve (the same functions quantize both).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["METHODS", "QuantizeReport", "quantize_model", "quantize_report", "register_quantize"]

METHODS = ("int8", "int4", "bf16")
_PROMPTS = (
    "The capital of France is",
    "To make a cup of tea, first",
    "Three reasons to learn a second language are",
    "def fibonacci(n):",
)
_GREEDY_TOKENS = 24


@dataclass(frozen=True, slots=True)
class QuantizeReport:
    """What quantization changed, measured on the bundled evaluation text and prompts."""

    method: str
    eval_tokens: int
    perplexity_original: float
    perplexity_quantized: float
    top1_agreement: float  # share of eval positions where both models predict the same token
    greedy_token_agreement: float  # share of greedy continuation tokens identical, position-wise
    linear_bytes_original: int
    linear_bytes_quantized: int

    @property
    def perplexity_increase(self) -> float:
        return self.perplexity_quantized / self.perplexity_original - 1.0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["perplexity_increase"] = self.perplexity_increase
        return data


def quantize_model(model: Any, method: str) -> Any:
    """``model`` in place as served with ``runtime.quantization: method`` (bfloat16 compute)."""
    from inference._weightonly import quantize_model as quantize

    return quantize(model, method)


def _linear_bytes(model: Any) -> int:
    import torch

    from inference._weightonly import WeightOnlyLinear

    total = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            total += module.weight.numel() * module.weight.element_size()
        elif isinstance(module, WeightOnlyLinear):
            total += module.weight_bytes
    return total


def _eval_ids(tokenizer: Any, limit: int) -> Any:
    import torch

    text = resources.files("inference").joinpath("data/eval.txt").read_text(encoding="utf-8")
    ids = tokenizer(text, return_tensors=None)["input_ids"][:limit]
    return torch.tensor([ids], dtype=torch.long)


def _logits(model: Any, ids: Any) -> Any:
    import torch

    with torch.inference_mode():
        return model(input_ids=ids, use_cache=False).logits[0].float()


def _perplexity(logits: Any, ids: Any) -> float:
    import torch

    loss = torch.nn.functional.cross_entropy(logits[:-1], ids[0, 1:])
    return math.exp(float(loss))


def _greedy(model: Any, tokenizer: Any, prompt: str) -> list[int]:
    import torch

    ids = torch.tensor([tokenizer(prompt)["input_ids"]], dtype=torch.long)
    out = []
    with torch.inference_mode():
        for _ in range(_GREEDY_TOKENS):
            logits = model(input_ids=ids, use_cache=False).logits[0, -1]
            token = int(logits.argmax())
            out.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return out


def quantize_report(model: Any, tokenizer: Any, *, method: str = "int8") -> QuantizeReport:
    """Quantize a copy of ``model`` and compare it with the original."""
    if method not in METHODS:
        from inference.errors import RequestError

        raise RequestError(f"unknown quantization method {method!r}; choose one of {METHODS}")
    limit = int(getattr(model.config, "max_position_embeddings", 1024) or 1024)
    ids = _eval_ids(tokenizer, min(limit, 1024))
    quantized = quantize_model(copy.deepcopy(model), method)
    original_logits = _logits(model, ids)
    quantized_logits = _logits(quantized, ids)
    agree = float((original_logits.argmax(-1) == quantized_logits.argmax(-1)).float().mean().item())
    same = total = 0
    for prompt in _PROMPTS:
        a, b = _greedy(model, tokenizer, prompt), _greedy(quantized, tokenizer, prompt)
        same += sum(x == y for x, y in zip(a, b, strict=True))
        total += len(a)
    return QuantizeReport(
        method=method,
        eval_tokens=int(ids.shape[1]),
        perplexity_original=_perplexity(original_logits, ids),
        perplexity_quantized=_perplexity(quantized_logits, ids),
        top1_agreement=agree,
        greedy_token_agreement=same / total,
        linear_bytes_original=_linear_bytes(model),
        linear_bytes_quantized=_linear_bytes(quantized),
    )


def _load_source(src: Path) -> tuple[Any, Any]:
    from inference.artifact import load_encrypted_model, load_model_dir
    from inference.errors import ModelLoadError

    if src.is_dir():
        loaded = load_model_dir(src, dtype="float32")
    elif src.is_file():
        from pki.hsm import HsmConfig, HsmSession

        with HsmSession(HsmConfig.from_env()) as hsm:
            loaded = load_encrypted_model(src, hsm, dtype="float32")
    else:
        raise ModelLoadError(f"{src} is neither a model directory nor an encrypted artifact")
    return loaded.model, loaded.tokenizer


def _run(args: argparse.Namespace) -> int:
    model, tokenizer = _load_source(Path(args.src))
    report = quantize_report(model, tokenizer, method=args.method)
    data = report.to_json()
    if args.out is not None:
        Path(args.out).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"method                  {report.method}")
    print(f"eval tokens             {report.eval_tokens}")
    print(
        f"perplexity              {report.perplexity_original:.3f} -> "
        f"{report.perplexity_quantized:.3f} ({report.perplexity_increase:+.1%})"
    )
    print(f"top-1 agreement         {report.top1_agreement:.1%}")
    print(f"greedy token agreement  {report.greedy_token_agreement:.1%}")
    print(
        f"Linear weights          {report.linear_bytes_original / 2**20:.1f} MiB -> "
        f"{report.linear_bytes_quantized / 2**20:.1f} MiB"
    )
    if args.out is not None:
        print(f"report written to {args.out}")
    return 0


def register_quantize(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``quantize`` to a ``bastion model`` sub-parser set."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "quantize",
        help="quantize a model and report the quality traded (perplexity, greedy agreement)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("src", metavar="SRC", help="model directory or encrypted artifact")
    parser.add_argument("--method", choices=METHODS, default="int8")
    parser.add_argument(
        "--out", metavar="FILE", help="write the quality report (JSON) to FILE", default=None
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=_run)
    return parser
