"""Loading a model: from an encrypted artifact through the HSM, or from a plaintext directory.

Both paths end in the same in-memory build (``_build``); the encrypted one decrypts each file
chunk by chunk straight into its final buffer (``AESGCM.decrypt_into``), so the plaintext exists
once, in memory, and never on disk. Everything is checked before anything is returned: a
tampered, truncated or foreign artifact raises and leaves nothing loaded.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from inference.artifact._build import build_model
from inference.artifact._encrypt import model_dir_files
from inference.artifact._format import (
    HEADER_TAG_NONCE,
    TAG_BYTES,
    ArtifactHeader,
    chunk_aad,
    chunk_nonce,
    data_key_aad,
    read_header,
)
from inference.artifact.errors import (
    ArtifactFormatError,
    ArtifactKeyError,
    ArtifactTamperedError,
    ModelDirError,
    ModelIdMismatchError,
)
from pki.hsm import HsmConfig, HsmSession, KeyMissingError, UnwrapError

__all__ = ["LoadStats", "LoadedModel", "load_encrypted_model", "load_model_dir"]

_MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class LoadStats:
    """How a load went: ``source`` is ``"encrypted"`` or ``"plaintext"``; seconds are wall time
    for reading (+ decrypting) the files and for building the model."""

    source: str
    bytes: int
    read_seconds: float
    build_seconds: float
    chunks: int = 0

    @property
    def seconds(self) -> float:
        return self.read_seconds + self.build_seconds

    @property
    def mb_per_s(self) -> float:
        return self.bytes / _MB / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A ready model (``eval()`` mode), its tokenizer, the model id and load figures."""

    model: Any = field(repr=False)
    tokenizer: Any = field(repr=False)
    model_id: str
    stats: LoadStats


def load_model_dir(
    path: Path, *, model_id: str | None = None, dtype: str | None = None
) -> LoadedModel:
    """Load a plaintext HF model directory (development, benches) through the same in-memory
    build as the encrypted path. ``dtype`` None keeps the stored dtype."""
    start = time.perf_counter()
    files: dict[str, bytearray] = {}
    for entry in model_dir_files(path):
        buf = bytearray(entry.stat().st_size)
        with entry.open("rb") as fh:
            if fh.readinto(buf) != len(buf):
                raise ModelDirError(f"{entry} changed size while being read")
        files[entry.name] = buf
    total = sum(len(b) for b in files.values())
    read_s = time.perf_counter() - start
    model, tokenizer = build_model(files, dtype=dtype)
    stats = LoadStats("plaintext", total, read_s, time.perf_counter() - start - read_s)
    return LoadedModel(model, tokenizer, model_id or path.resolve().name, stats)


def load_encrypted_model(
    path: Path,
    hsm: HsmSession | HsmConfig,
    *,
    expected_model_id: str | None = None,
    dtype: str | None = None,
) -> LoadedModel:
    """Unwrap the artifact's data key in the HSM, decrypt into memory, build the model.

    Raises an :class:`~inference.artifact.errors.ArtifactError` subclass for a malformed,
    tampered or truncated artifact, a data key the token cannot unwrap (wrong token, KEK missing
    or replaced) and a model id other than ``expected_model_id``; HSM access problems (PIN,
    module, token absent) stay :class:`pki.hsm.HSMError`. Blocking: call it from a thread."""
    start = time.perf_counter()
    header, files = _decrypt_files_plaintext(path, hsm, expected_model_id)
    read_s = time.perf_counter() - start
    try:
        model, tokenizer = build_model(files, dtype=dtype)
    finally:
        for buf in files.values():  # config and tokenizer plaintext; the weights live on
            buf[:] = bytes(len(buf))
    stats = LoadStats(
        "encrypted",
        header.plaintext_bytes,
        read_s,
        time.perf_counter() - start - read_s,
        header.chunk_count,
    )
    return LoadedModel(model, tokenizer, header.model_id, stats)


def _unwrap(hsm: HsmSession | HsmConfig, header: ArtifactHeader, path: Path) -> bytearray:
    session = HsmSession(hsm) if isinstance(hsm, HsmConfig) else hsm
    try:
        return session.unwrap_data_key_plaintext(header.data_key, aad=data_key_aad(header.model_id))
    except (UnwrapError, KeyMissingError) as exc:
        raise ArtifactKeyError(
            f"{path}: the data key cannot be unwrapped on token "
            f"{session.config.token_label!r}: {exc}"
        ) from None
    finally:
        if session is not hsm:
            session.close()


def _decrypt_files_plaintext(
    path: Path, hsm: HsmSession | HsmConfig, expected_model_id: str | None
) -> tuple[ArtifactHeader, dict[str, bytearray]]:
    """Every file of the artifact, decrypted and authenticated, as PLAINTEXT in memory."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise ArtifactFormatError(f"cannot read {path}: {exc.strerror}") from None
    with fh:
        header = read_header(fh, path)
        if expected_model_id is not None and header.model_id != expected_model_id:
            raise ModelIdMismatchError(
                f"{path} holds model {header.model_id!r}, not the expected {expected_model_id!r}; "
                "check the artifact path or the configured model id"
            )
        size = os.fstat(fh.fileno()).st_size
        if size != header.expected_file_size:
            raise ArtifactTamperedError(
                f"{path} is {size} bytes but its header describes {header.expected_file_size}: "
                "the file was truncated or extended"
            )
        data_key = _unwrap(hsm, header, path)
        try:
            aead = AESGCM(bytes(data_key))
        finally:
            data_key[:] = bytes(len(data_key))
        tag = fh.read(TAG_BYTES)
        try:
            aead.decrypt(HEADER_TAG_NONCE, tag, header.header_hash)
        except InvalidTag:
            raise ArtifactTamperedError(
                f"{path}: the header failed authentication: it was altered after encryption"
            ) from None
        return header, _decrypt_chunks(fh, header, aead, path)


def _decrypt_chunks(
    fh: Any, header: ArtifactHeader, aead: AESGCM, path: Path
) -> dict[str, bytearray]:
    files: dict[str, bytearray] = {}
    chunk_size = header.chunk_size
    last_index = header.chunk_count - 1
    sealed = bytearray(chunk_size + TAG_BYTES)
    sealed_view = memoryview(sealed)
    index = 0
    for entry in header.files:
        out = bytearray(entry.size)
        out_view = memoryview(out)
        for offset in range(0, entry.size, chunk_size):
            n = min(chunk_size, entry.size - offset)
            if fh.readinto(sealed_view[: n + TAG_BYTES]) != n + TAG_BYTES:
                raise ArtifactTamperedError(f"{path}: truncated at chunk {index}")
            try:
                aead.decrypt_into(
                    chunk_nonce(index),
                    sealed_view[: n + TAG_BYTES],
                    chunk_aad(header.header_hash, index, index == last_index),
                    out_view[offset : offset + n],
                )
            except InvalidTag:
                raise ArtifactTamperedError(
                    f"{path}: chunk {index} (file {entry.name}) failed authentication: the "
                    "artifact was altered, its chunks reordered, or it was truncated"
                ) from None
            index += 1
        files[entry.name] = out
    return files
