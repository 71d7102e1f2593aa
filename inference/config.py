"""The worker's configuration: YAML → a frozen pydantic model, unknown keys refused by name.

Every lever an operator may turn is here, with its trade-off::

    model:
      source: encrypted          # encrypted (artifact + HSM) | dir (plaintext HF dir, dev only)
      path: /var/lib/bastion/models/smollm2.bastion
      name: smollm2-135m-instruct   # served model id; for `encrypted`, must equal the artifact's
      hsm: {token: bastion, pin_file: /run/secrets/hsm-pin}
    runtime:
      device: auto               # auto | cpu | cuda
      dtype: float32             # float32 | bfloat16 | float16 (CUDA only)
      quantization: none         # none | int8 | int4 (CPU, weight-only, bfloat16) | nf4 (CUDA)
      attn_implementation: sdpa  # sdpa | eager | flash_attention_2 (CUDA only)
      threads: null              # torch intra-op threads; null = all cores
    batching:
      max_batch_size: 16
      kv_cache_tokens: 16384
      max_input_tokens: 2048
      max_total_tokens: 4096
      max_prefill_tokens: 4096
      max_queue_tokens: 65536
      default_max_tokens: 256
      prefix_cache_tokens: 4096  # 0 disables prefix reuse
    warmup: {enabled: true}
    server:
      host: 127.0.0.1
      port: 8100
      tls: {cert: ..., key: ..., ca: ..., crl: ..., trust_domain: bastion.internal,
            allowed_clients: [spiffe://bastion.internal/bastion/gateway]}

Combinations that cannot work are refused when the file loads (:class:`WorkerConfig`) or, for
those that depend on the machine (CUDA present, optional kernels installed), by
:func:`check_runtime` at startup, before any weight is read.
"""

from __future__ import annotations

import importlib.util
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inference.errors import WorkerConfigError
from inference.tracing import WorkerTracingConfig
from pki.hsm import HsmSettings
from pki.yamlfile import YamlDocument, YamlFileError, format_path, read_yaml_file

__all__ = [
    "AttnImplementation",
    "BatchingConfig",
    "DType",
    "ModelConfig",
    "ModelSourceKind",
    "Quantization",
    "RuntimeConfig",
    "ServerConfig",
    "TLSConfig",
    "WarmupConfig",
    "WorkerConfig",
    "check_runtime",
    "load_config",
]

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class ModelSourceKind(StrEnum):
    ENCRYPTED = "encrypted"
    DIR = "dir"


class DType(StrEnum):
    FLOAT32 = "float32"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


class Quantization(StrEnum):
    NONE = "none"
    INT8 = "int8"
    INT4 = "int4"
    NF4 = "nf4"


class AttnImplementation(StrEnum):
    SDPA = "sdpa"
    EAGER = "eager"
    FLASH_ATTENTION_2 = "flash_attention_2"
    # transformers' paged kernels serve only its own continuous-batching manager, which this
    # worker does not use (see inference.scheduler); accepted here so the refusal can say why.
    PAGED = "paged"


class ModelConfig(BaseModel):
    """Where the weights come from. ``encrypted`` is the production path."""

    model_config = _FROZEN

    source: ModelSourceKind = ModelSourceKind.ENCRYPTED
    path: Path
    # The id served on /v1/models. For an encrypted artifact it is checked against the
    # artifact header, so a swapped file is refused instead of served under the wrong name.
    name: str | None = Field(default=None, min_length=1, max_length=200)
    hsm: HsmSettings | None = None

    @model_validator(mode="after")
    def _hsm_matches_source(self) -> ModelConfig:
        if self.source is ModelSourceKind.ENCRYPTED and self.hsm is None:
            raise ValueError("source 'encrypted' needs an 'hsm' section to unwrap the data key")
        if self.source is ModelSourceKind.DIR and self.hsm is not None:
            raise ValueError(
                "source 'dir' is plaintext; remove the 'hsm' section or use 'encrypted'"
            )
        return self


class RuntimeConfig(BaseModel):
    """Numerics and kernels. Each choice trades quality, speed and memory."""

    model_config = _FROZEN

    # auto: CUDA when present, else CPU.
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    # float32: reference quality, 4 bytes/param. bfloat16: half the memory and, on CPUs with
    # AVX512-BF16/AMX or any recent GPU, about twice the speed; greedy outputs may differ from
    # float32 in late tokens, and bf16 rounding makes batched greedy outputs occasionally differ
    # from single-request ones (float32 keeps them equal). float16: CUDA only (CPU fp16
    # kernels are slow and overflow-prone).
    dtype: DType = DType.FLOAT32
    # int8: weight-only int8, one scale per output channel; int4: weight-only 4-bit, a scale and
    # zero point per 32 input channels. CPU, with dtype bfloat16 (activations): Linear weights
    # 2x / 4x smaller than bfloat16; quality traded in `bastion model quantize` (perplexity,
    # greedy agreement). Applied at load to the decrypted weights; nothing is written to disk.
    # nf4: 4-bit bitsandbytes on CUDA only.
    quantization: Quantization = Quantization.NONE
    # sdpa: PyTorch fused attention, the default. eager: plain matmul/softmax, slower, for
    # debugging numerics. flash_attention_2: CUDA + flash-attn package + fp16/bf16 only.
    attn_implementation: AttnImplementation = AttnImplementation.SDPA
    # torch intra-op threads. null = every core; lower it when the worker shares the host.
    threads: int | None = Field(default=None, ge=1, le=512)

    @model_validator(mode="after")
    def _combinations(self) -> RuntimeConfig:
        if self.attn_implementation is AttnImplementation.PAGED:
            raise ValueError(
                "attn_implementation 'paged' serves only transformers' own continuous-batching "
                "manager; this worker batches with its own slot KV cache. Use 'sdpa' (default)"
            )
        if (
            self.quantization in (Quantization.INT8, Quantization.INT4)
            and self.dtype is not DType.BFLOAT16
        ):
            raise ValueError(
                f"quantization {self.quantization.value!r} (weight-only, CPU) computes in "
                f"bfloat16; dtype {self.dtype.value!r} cannot be combined with it (its packed "
                "kernels are ~20x slower with float32 activations). Set dtype: bfloat16"
            )
        if (
            self.attn_implementation is AttnImplementation.FLASH_ATTENTION_2
            and self.dtype is DType.FLOAT32
        ):
            raise ValueError(
                "attn_implementation 'flash_attention_2' needs dtype float16 or bfloat16, "
                "not float32"
            )
        return self


class BatchingConfig(BaseModel):
    """Scheduler and admission limits, all counted in tokens of the served model."""

    model_config = _FROZEN

    # Sequences decoded together. Higher: more tokens/s in aggregate, slower steps (ITL) and
    # more KV memory. On 2 CPU cores a 135M model still gains up to ~16.
    max_batch_size: int = Field(default=16, ge=1, le=256)
    # Tokens (prompt + max_tokens) that running sequences may reserve in the KV cache. A request
    # that does not fit waits in the queue; memory stays bounded by this, never OOM.
    kv_cache_tokens: int = Field(default=16384, ge=16)
    # Longest prompt accepted (400 beyond). Bounds prefill time, hence other streams' ITL.
    max_input_tokens: int = Field(default=2048, ge=1)
    # Longest prompt + completion of one sequence (400 beyond); at most the model's context.
    max_total_tokens: int = Field(default=4096, ge=2)
    # Padded prompt tokens prefilled in one forward pass when requests join. Higher: better
    # TTFT under bursts; lower: shorter stalls for sequences already decoding.
    max_prefill_tokens: int = Field(default=4096, ge=1)
    # Tokens (prompt + max_tokens) allowed to wait. Beyond: 429 with Retry-After.
    max_queue_tokens: int = Field(default=65536, ge=1)
    # max_tokens when the request gives none (still capped by max_total_tokens).
    default_max_tokens: int = Field(default=256, ge=1)
    # Tokens of prompt prefixes whose keys/values are kept for reuse (a repeated system prompt
    # is prefilled once, not per request); least recently used evicted beyond it. Memory:
    # this x the KV bytes per token (SmolLM2-135M: 23 KiB bfloat16, 45 KiB float32). 0 turns
    # it off; a cached prefix answers faster, so a caller able to time the worker could learn
    # that a recent prompt began with a given text (see inference._prefix). CPU fast path, and
    # not with dtype float32: that is the exact reference path (a suffix prefilled against
    # cached keys rounds differently from a full prefill, so greedy text could differ).
    prefix_cache_tokens: int = Field(default=4096, ge=0, le=1 << 20)

    @model_validator(mode="after")
    def _limits(self) -> BatchingConfig:
        if self.max_input_tokens >= self.max_total_tokens:
            raise ValueError(
                f"max_input_tokens ({self.max_input_tokens}) must be below max_total_tokens "
                f"({self.max_total_tokens}) so at least one token can be generated"
            )
        if self.kv_cache_tokens < self.max_total_tokens:
            raise ValueError(
                f"kv_cache_tokens ({self.kv_cache_tokens}) is below max_total_tokens "
                f"({self.max_total_tokens}): a request at the limit could never run. Raise "
                "kv_cache_tokens or lower max_total_tokens"
            )
        if self.max_prefill_tokens < self.max_input_tokens:
            raise ValueError(
                f"max_prefill_tokens ({self.max_prefill_tokens}) is below max_input_tokens "
                f"({self.max_input_tokens}): the longest prompt could never be prefilled"
            )
        if self.max_queue_tokens < self.max_total_tokens:
            raise ValueError(
                f"max_queue_tokens ({self.max_queue_tokens}) is below max_total_tokens "
                f"({self.max_total_tokens}): a request at the limit could never queue"
            )
        return self


class WarmupConfig(BaseModel):
    """Forward passes run before /readyz turns ready, at the configured batch shapes."""

    model_config = _FROZEN

    enabled: bool = True
    # Decode batch sizes exercised; null = 1 and max_batch_size.
    batch_sizes: tuple[int, ...] | None = None
    prompt_tokens: int = Field(default=32, ge=1)
    decode_steps: int = Field(default=4, ge=1)


class TLSConfig(BaseModel):
    """mTLS: the worker accepts only callers whose SPIFFE ID is listed."""

    model_config = _FROZEN

    cert: Path
    key: Path
    ca: Path
    crl: Path | None = None
    trust_domain: str = "bastion.internal"
    # null = only the gateway: spiffe://<trust_domain>/bastion/gateway
    allowed_clients: tuple[str, ...] | None = None

    def allowed(self) -> frozenset[str]:
        if self.allowed_clients is not None:
            return frozenset(self.allowed_clients)
        return frozenset({f"spiffe://{self.trust_domain}/bastion/gateway"})


class ServerConfig(BaseModel):
    model_config = _FROZEN

    host: str = "127.0.0.1"
    port: int = Field(default=8100, ge=0, le=65535)
    tls: TLSConfig | None = None
    # Serve without TLS or client identity. Only for local development and tests; refused
    # unless set explicitly, so a missing `tls:` section fails closed.
    insecure_plain_http: bool = False
    max_body_bytes: int = Field(default=1 << 20, ge=1024)

    @model_validator(mode="after")
    def _tls_or_explicit_plain(self) -> ServerConfig:
        if self.tls is None and not self.insecure_plain_http:
            raise ValueError(
                "no 'tls' section: the worker serves mTLS only. Add server.tls, or set "
                "server.insecure_plain_http: true for local development"
            )
        if self.tls is not None and self.insecure_plain_http:
            raise ValueError("server.tls and server.insecure_plain_http are mutually exclusive")
        return self


class WorkerConfig(BaseModel):
    model_config = _FROZEN

    model: ModelConfig
    runtime: RuntimeConfig = RuntimeConfig()
    batching: BatchingConfig = BatchingConfig()
    warmup: WarmupConfig = WarmupConfig()
    server: ServerConfig
    # OpenTelemetry: continues the gateway's trace (W3C traceparent). Off by default.
    tracing: WorkerTracingConfig = WorkerTracingConfig()

    @model_validator(mode="after")
    def _warmup_fits(self) -> WorkerConfig:
        for size in self.warmup.batch_sizes or ():
            if not 1 <= size <= self.batching.max_batch_size:
                raise ValueError(
                    f"warmup batch size {size} is outside 1..max_batch_size "
                    f"({self.batching.max_batch_size})"
                )
        return self


def _format_validation(
    error: ValidationError, source: str, document: YamlDocument | None = None
) -> str:
    """Each problem by key path; read from a file, each also at its ``file:line:col``."""
    parts = []
    for item in error.errors():
        where = format_path(item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            part = f"unknown key {where!r}"
        else:
            message = item["msg"].removeprefix("Value error, ")
            part = f"{where}: {message}"
        if document is not None:
            line, col = document.locate(item["loc"], key=True)
            part = f"{document.file}:{line}:{col}: {part}"
        parts.append(part)
    if document is not None:
        return f"worker config {source} is invalid:\n" + "\n".join(parts)
    return f"worker config {source} is invalid: " + "; ".join(parts)


def config_from_mapping(data: Any, *, source: str = "(mapping)") -> WorkerConfig:
    """Validate an already parsed mapping; raise :class:`WorkerConfigError` naming each problem."""
    if not isinstance(data, dict):
        raise WorkerConfigError(f"worker config {source} must be a mapping at the top level")
    try:
        return WorkerConfig.model_validate(data)
    except ValidationError as exc:
        raise WorkerConfigError(_format_validation(exc, source)) from None


def load_config(path: Path) -> WorkerConfig:
    """Read a YAML worker config (the loader shared with the gateway's config and policies, so
    every problem names ``file:line:col``); relative paths resolve against the file's folder."""
    try:
        document = read_yaml_file(path)
    except YamlFileError as exc:
        raise WorkerConfigError(f"worker config {exc}") from None
    if not isinstance(document.data, dict):
        raise WorkerConfigError(f"worker config {path}:1:1: must be a mapping at the top level")
    try:
        config = WorkerConfig.model_validate(document.data)
    except ValidationError as exc:
        raise WorkerConfigError(_format_validation(exc, str(path), document)) from None
    return _resolve_paths(config, path.parent)


def _resolve_paths(config: WorkerConfig, base: Path) -> WorkerConfig:
    def fix(p: Path) -> Path:
        return p if p.is_absolute() else base / p

    model = config.model.model_copy(update={"path": fix(config.model.path)})
    server = config.server
    if server.tls is not None:
        tls = server.tls
        server = server.model_copy(
            update={
                "tls": tls.model_copy(
                    update={
                        "cert": fix(tls.cert),
                        "key": fix(tls.key),
                        "ca": fix(tls.ca),
                        "crl": fix(tls.crl) if tls.crl is not None else None,
                    }
                )
            }
        )
    return config.model_copy(update={"model": model, "server": server})


def check_runtime(runtime: RuntimeConfig, *, cuda_available: bool) -> str:
    """Refuse machine-dependent combinations before any weight is read; return the device."""
    device = runtime.device
    if device == "auto":
        device = "cuda" if cuda_available else "cpu"
    on_cuda = device.startswith("cuda")
    if on_cuda and not cuda_available:
        raise WorkerConfigError(
            f"runtime.device is {device!r} but no CUDA device is visible; use 'cpu' or 'auto'"
        )
    if not on_cuda:
        if runtime.dtype is DType.FLOAT16:
            raise WorkerConfigError(
                "dtype 'float16' is refused on CPU (slow kernels, overflow); use bfloat16 or float32"
            )
        if runtime.quantization is Quantization.NF4:
            raise WorkerConfigError(
                "quantization 'nf4' (4-bit) runs only on CUDA; on CPU use 'int8' or 'none'"
            )
        if runtime.attn_implementation is AttnImplementation.FLASH_ATTENTION_2:
            raise WorkerConfigError(
                "attn_implementation 'flash_attention_2' runs only on CUDA; on CPU use 'sdpa'"
            )
    else:
        if runtime.quantization in (Quantization.INT8, Quantization.INT4):
            raise WorkerConfigError(
                f"quantization {runtime.quantization.value!r} uses PyTorch's packed CPU "
                "kernels only; on CUDA use 'nf4' or 'none'"
            )
        if (
            runtime.quantization is Quantization.NF4
            and importlib.util.find_spec("bitsandbytes") is None
        ):
            raise WorkerConfigError(
                "quantization 'nf4' needs the bitsandbytes package, which is not installed"
            )
        if (
            runtime.attn_implementation is AttnImplementation.FLASH_ATTENTION_2
            and importlib.util.find_spec("flash_attn") is None
        ):
            raise WorkerConfigError(
                "attn_implementation 'flash_attention_2' needs the flash-attn package, which "
                "is not installed; use 'sdpa'"
            )
    return device
