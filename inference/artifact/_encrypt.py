"""``bastion model encrypt``: a model directory → one encrypted artifact (layout in ``_format``)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import struct
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from inference.artifact._build import REQUIRED_FILES, WEIGHTS
from inference.artifact._format import (
    CIPHER,
    FORMAT_NAME,
    FORMAT_VERSION,
    HEADER_TAG_NONCE,
    MAX_CHUNK,
    MIN_CHUNK,
    ArtifactHeader,
    chunk_aad,
    chunk_nonce,
    data_key_aad,
    encode_header,
    inspect_artifact,
)
from inference.artifact.errors import ArtifactError, ModelDirError
from pki.hsm import DATA_KEY_BYTES, HsmSession

__all__ = ["DEFAULT_CHUNK_SIZE", "Progress", "encrypt_model_dir", "model_dir_files"]

DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
MAX_FILES = 64
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")

Progress = Callable[[int, int], None]
"""Called with (bytes done, bytes total) after each chunk."""


def model_dir_files(src: Path) -> list[Path]:
    """The files of an HF model directory, weights last. Hidden files are skipped; anything else
    that is not a plain file (a subdirectory, a sharded index) is refused."""
    if not src.is_dir():
        raise ModelDirError(f"model directory {src} does not exist or is not a directory")
    files: list[Path] = []
    for entry in sorted(src.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.name.endswith(".safetensors.index.json"):
            raise ModelDirError(
                f"{src} holds a sharded checkpoint ({entry.name}); save it as one "
                "model.safetensors (save_pretrained(max_shard_size='100GB'))"
            )
        if not entry.is_file() or entry.is_symlink():
            raise ModelDirError(
                f"{entry} is not a plain file; a model directory holds only plain files"
            )
        files.append(entry)
    names = {f.name for f in files}
    missing = [n for n in REQUIRED_FILES if n not in names]
    if missing:
        raise ModelDirError(f"{src} lacks {', '.join(missing)}; is it an HF model directory?")
    if len(files) > MAX_FILES:
        raise ModelDirError(f"{src} holds {len(files)} files; the limit is {MAX_FILES}")
    files.sort(key=lambda f: (f.name == WEIGHTS, f.name))
    return files


def _tensor_index(weights: Path) -> list[list[object]]:
    with weights.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelDirError(f"{weights} is too short to be a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > 100 * 1024 * 1024:
            raise ModelDirError(f"{weights} declares a {n}-byte header: not safetensors")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ModelDirError(f"{weights} header is not valid JSON: not safetensors") from None
    if not isinstance(header, dict):
        raise ModelDirError(f"{weights} header is not a JSON object: not safetensors")
    header.pop("__metadata__", None)
    try:
        return [[name, info["dtype"], list(info["shape"])] for name, info in header.items()]
    except (KeyError, TypeError):
        raise ModelDirError(f"{weights} has a malformed tensor entry") from None


def encrypt_model_dir(
    src: Path,
    out: Path,
    hsm: HsmSession,
    *,
    model_id: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
) -> ArtifactHeader:
    """Encrypt the model directory ``src`` into the artifact ``out`` under a fresh data key
    wrapped by the HSM's KEK. The data key never leaves process memory; ``out`` is written to a
    ``.partial`` file and renamed when complete. Returns the header as written."""
    model_id = model_id or src.resolve().name
    if not _MODEL_ID.match(model_id):
        raise ArtifactError(
            f"model id {model_id!r} is invalid: 1-128 characters of letters, digits and ._:/@+-"
        )
    if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
        raise ArtifactError(f"chunk size {chunk_size} is outside [{MIN_CHUNK}, {MAX_CHUNK}]")
    if out.exists():
        raise ArtifactError(f"{out} already exists; remove it or choose another output path")
    files = model_dir_files(src)
    sizes = {f.name: f.stat().st_size for f in files}
    tensors = _tensor_index(src / WEIGHTS)
    total = sum(sizes.values())

    data_key = bytearray(os.urandom(DATA_KEY_BYTES))
    try:
        wrapped = hsm.wrap_data_key(data_key, aad=data_key_aad(model_id))
        raw_header, header_hash = encode_header(
            {
                "format": FORMAT_NAME,
                "version": FORMAT_VERSION,
                "model_id": model_id,
                "created_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "cipher": CIPHER,
                "chunk_size": chunk_size,
                "data_key": wrapped.to_json(),
                "files": [{"name": f.name, "size": sizes[f.name]} for f in files],
                "tensors": tensors,
            }
        )
        aead = AESGCM(bytes(data_key))
        partial = out.with_name(out.name + ".partial")
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            raise ArtifactError(
                f"{partial} exists: another encryption is running or crashed; remove it"
            ) from None
        try:
            with os.fdopen(fd, "wb") as sink:
                sink.write(raw_header)
                sink.write(aead.encrypt(HEADER_TAG_NONCE, b"", header_hash))
                _write_chunks(sink, files, sizes, aead, header_hash, chunk_size, total, progress)
                sink.flush()
                os.fsync(sink.fileno())
            os.replace(partial, out)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    finally:
        data_key[:] = bytes(DATA_KEY_BYTES)
    return inspect_artifact(out)


def _write_chunks(
    sink: BinaryIO,
    files: list[Path],
    sizes: dict[str, int],
    aead: AESGCM,
    header_hash: bytes,
    chunk_size: int,
    total: int,
    progress: Progress | None,
) -> None:
    write = sink.write
    chunk_total = sum(-(-s // chunk_size) for s in sizes.values())
    index = done = 0
    buf = bytearray(chunk_size)
    view = memoryview(buf)
    for path in files:
        remaining = sizes[path.name]
        with path.open("rb") as fh:
            while remaining > 0:
                want = min(chunk_size, remaining)
                got = fh.readinto(view[:want])
                if got != want:
                    raise ModelDirError(f"{path} changed size while being encrypted; try again")
                last = index == chunk_total - 1
                write(
                    aead.encrypt(
                        chunk_nonce(index), view[:want], chunk_aad(header_hash, index, last)
                    )
                )
                index += 1
                remaining -= want
                done += want
                if progress is not None:
                    progress(done, total)
            if fh.read(1):
                raise ModelDirError(f"{path} grew while being encrypted; try again")
