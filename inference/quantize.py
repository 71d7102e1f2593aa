"""Int8 dynamic quantization on CPU, and the quality report an operator reads before serving it.

``bastion model quantize SRC --method int8 --out FILE`` loads SRC (a plaintext model directory,
or an encrypted artifact opened through the HSM named by ``BASTION_HSM_*``), quantizes a copy,
and measures what was traded: perplexity on a bundled English text (``data/eval.txt``) before and
after, teacher-forced top-1 agreement, greedy continuations compared token by token, and the
bytes of Linear weights. FILE receives the report as JSON.

The quantized weights are deliberately not written: they would be a second, plaintext copy of
the model on disk. Int8 dynamic quantization is deterministic from the original weights, so the
worker applies it at load time (``runtime.quantization: int8``) to the encrypted artifact, and
this report describes exactly what it will serve.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import warnings
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["QuantizeReport", "quantize_int8", "quantize_report", "register_quantize"]

METHODS = ("int8",)
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


# Linear layers left in float: the MLP down projection sees the SwiGLU activation outliers, and
# dynamic per-tensor activation quantization there is what wrecks quality (SmolLM2-135M: eval
# perplexity 25.7 -> 75 with it quantized, 31 without); the vocabulary projection is the other
# sensitive one. Measured with `bastion model quantize` (figures in the report).
KEEP_FLOAT = ("down_proj", "lm_head")


def quantize_int8(model: Any, *, keep_float: tuple[str, ...] = KEEP_FLOAT) -> Any:
    """A copy of ``model`` with its ``nn.Linear`` layers as dynamic int8 layers (CPU kernels):
    per-channel int8 weights, activations quantized per batch at run time; layers whose name
    ends with one of ``keep_float`` stay float."""
    import torch

    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao, which is not a dependency;
        # the eager dynamic path still works in the pinned torch (pyproject.toml).
        warnings.simplefilter("ignore", DeprecationWarning)
        # ... and PyTorch flags quantized tensor dtypes (qint8) for future removal (#184982).
        warnings.filterwarnings(
            "ignore", message=r"torch\.quantize_per_tensor", category=UserWarning
        )
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        spec = {
            name: per_channel_dynamic_qconfig
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and not name.endswith(keep_float)
        }
        quantized = quantize_dynamic(  # type: ignore[no-untyped-call]
            model, spec, dtype=torch.qint8
        )
    return quantized.eval()


def _linear_bytes(model: Any) -> int:
    import torch

    total = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            total += module.weight.numel() * module.weight.element_size()
        elif hasattr(module, "_packed_params") and callable(getattr(module, "weight", None)):
            weight = module.weight()
            total += weight.numel() * weight.element_size()
            total += 4 * weight.shape[0]  # per-channel scale/zero point order of magnitude
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
    quantized = quantize_int8(copy.deepcopy(model))
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
