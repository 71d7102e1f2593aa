"""The artifact layout, and reading its header without decrypting anything.

::

    offset 0   magic      b"BASTNMDL"            8 bytes
           8   version    u32 big-endian (1)
          12   hlen       u32 big-endian         length of the header JSON
          16   header     hlen bytes of canonical JSON (sorted keys, no spaces)
     16+hlen   header tag 16 bytes: AES-GCM tag over nothing, AAD = H, nonce = ff ff ff ff ‖ 0^8
     32+hlen   chunks     for each chunk i: ciphertext ‖ 16-byte tag

``H = SHA-256(bytes 0 .. 16+hlen)`` binds every header field (model id, KEK id, wrapped data key,
file and tensor index, chunk size). Files of the model directory are laid out one after another,
each cut into ``chunk_size`` pieces (the last piece of a file may be shorter); chunk indices run
across the whole artifact. Chunk ``i`` is AES-256-GCM under the data key with nonce
``00 00 00 00 ‖ u64(i)`` and AAD ``H ‖ u64(i) ‖ u8(last)``, ``last`` = 1 only on the final chunk,
so no chunk can be altered, swapped, reordered, dropped, or the file truncated or extended
undetected. Nonces never repeat: the data key is fresh for every artifact. The data key is
wrapped by the HSM's KEK with AAD ``"bastion-model-dek/v1\\0" ‖ model id``.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from inference.artifact.errors import ArtifactFormatError, ArtifactTamperedError
from pki.hsm import UnwrapError, WrappedKey

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "ArtifactHeader",
    "FileEntry",
    "TensorEntry",
    "chunk_aad",
    "chunk_nonce",
    "data_key_aad",
    "read_header",
]

MAGIC = b"BASTNMDL"
FORMAT_VERSION = 1
FORMAT_NAME = "bastion-model-artifact"
CIPHER = "AES-256-GCM"
TAG_BYTES = 16
PREFIX = struct.Struct(">8sII")
MAX_HEADER_BYTES = 16 * 1024 * 1024  # a big model's tensor index is a few hundred KB
MIN_CHUNK, MAX_CHUNK = 4 * 1024, 256 * 1024 * 1024
HEADER_TAG_NONCE = b"\xff\xff\xff\xff" + bytes(8)
_HEADER_KEYS = {
    "format",
    "version",
    "model_id",
    "created_at",
    "cipher",
    "chunk_size",
    "data_key",
    "files",
    "tensors",
}


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of the model directory: its name, plaintext size and chunk range."""

    name: str
    size: int
    first_chunk: int
    chunk_count: int


@dataclass(frozen=True, slots=True)
class TensorEntry:
    """One tensor of ``model.safetensors`` (name, dtype, shape): shown by ``inspect``."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True, slots=True)
class ArtifactHeader:
    """The parsed header. Nothing in it is trusted until the header tag verifies."""

    version: int
    model_id: str
    created_at: str
    cipher: str
    chunk_size: int
    data_key: WrappedKey
    files: tuple[FileEntry, ...]
    tensors: tuple[TensorEntry, ...]
    header_hash: bytes
    header_end: int  # offset of the header tag

    @property
    def data_offset(self) -> int:
        return self.header_end + TAG_BYTES

    @property
    def chunk_count(self) -> int:
        return sum(f.chunk_count for f in self.files)

    @property
    def plaintext_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def expected_file_size(self) -> int:
        return self.data_offset + self.plaintext_bytes + self.chunk_count * TAG_BYTES

    def facts(self) -> dict[str, Any]:
        """What ``bastion model inspect`` prints (no key material)."""
        dtypes = sorted({t.dtype for t in self.tensors})
        return {
            "format": FORMAT_NAME,
            "version": self.version,
            "model_id": self.model_id,
            "created_at": self.created_at,
            "cipher": self.cipher,
            "chunk_size": self.chunk_size,
            "chunks": self.chunk_count,
            "plaintext_bytes": self.plaintext_bytes,
            "kek_label": self.data_key.kek_label,
            "kek_id": self.data_key.kek_id,
            "wrap_mechanism": self.data_key.mechanism,
            "header_sha256": self.header_hash.hex(),
            "files": [{"name": f.name, "size": f.size} for f in self.files],
            "tensor_count": len(self.tensors),
            "parameters": sum(t.numel for t in self.tensors),
            "tensor_dtypes": dtypes,
        }


def data_key_aad(model_id: str) -> bytes:
    return b"bastion-model-dek/v1\x00" + model_id.encode("utf-8")


def chunk_nonce(index: int) -> bytes:
    return bytes(4) + index.to_bytes(8, "big")


def chunk_aad(header_hash: bytes, index: int, last: bool) -> bytes:
    return header_hash + index.to_bytes(8, "big") + (b"\x01" if last else b"\x00")


def encode_header(fields: dict[str, Any]) -> tuple[bytes, bytes]:
    """The header bytes (prefix + canonical JSON) and their SHA-256."""
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    if len(body) > MAX_HEADER_BYTES:
        raise ArtifactFormatError(
            f"header is {len(body)} bytes; the limit is {MAX_HEADER_BYTES}. Too many tensors?"
        )
    raw = PREFIX.pack(MAGIC, FORMAT_VERSION, len(body)) + body
    return raw, hashlib.sha256(raw).digest()


def _bad(path: Path, what: str) -> ArtifactFormatError:
    return ArtifactFormatError(
        f"{path}: {what}. The file is not a Bastion model artifact of format version "
        f"{FORMAT_VERSION}, or its header was altered; re-create it with `bastion model encrypt`."
    )


def _int(value: object, path: Path, what: str, *, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _bad(path, f"{what} is not an integer >= {minimum}")
    return value


def read_header(fh: BinaryIO, path: Path) -> ArtifactHeader:
    """Parse and check the header's shape (not its authenticity: that needs the data key)."""
    prefix = fh.read(PREFIX.size)
    if len(prefix) < PREFIX.size:
        raise _bad(path, f"file is {len(prefix)} bytes long, shorter than the fixed prefix")
    magic, version, hlen = PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise _bad(path, "magic bytes do not match")
    if version != FORMAT_VERSION:
        raise _bad(path, f"format version {version} is not supported")
    if hlen > MAX_HEADER_BYTES:
        raise _bad(path, f"header length {hlen} exceeds the limit {MAX_HEADER_BYTES}")
    body = fh.read(hlen)
    if len(body) != hlen:
        raise ArtifactTamperedError(f"{path}: truncated inside the header")
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _bad(path, "header is not valid JSON") from None
    if not isinstance(doc, dict) or set(doc) != _HEADER_KEYS:
        raise _bad(path, f"header keys differ from {sorted(_HEADER_KEYS)}")
    if doc["format"] != FORMAT_NAME or doc["version"] != FORMAT_VERSION:
        raise _bad(path, "header names another format or version")
    if doc["cipher"] != CIPHER:
        raise _bad(path, f"cipher {doc['cipher']!r} is not {CIPHER}")
    chunk_size = _int(doc["chunk_size"], path, "chunk_size", minimum=MIN_CHUNK)
    if chunk_size > MAX_CHUNK:
        raise _bad(path, f"chunk_size {chunk_size} exceeds {MAX_CHUNK}")
    if not isinstance(doc["model_id"], str) or not isinstance(doc["created_at"], str):
        raise _bad(path, "model_id/created_at are not strings")
    try:
        data_key = WrappedKey.from_json(doc["data_key"])
    except UnwrapError as exc:
        raise _bad(path, str(exc)) from None
    files: list[FileEntry] = []
    next_chunk = 0
    if not isinstance(doc["files"], list) or not doc["files"]:
        raise _bad(path, "file index is empty")
    for item in doc["files"]:
        if not isinstance(item, dict) or set(item) != {"name", "size"}:
            raise _bad(path, "a file index entry is malformed")
        name, size = item["name"], _int(item["size"], path, "file size")
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise _bad(path, "a file name in the index is not a plain name")
        count = -(-size // chunk_size)
        files.append(FileEntry(name, size, next_chunk, count))
        next_chunk += count
    if len({f.name for f in files}) != len(files):
        raise _bad(path, "a file name appears twice in the index")
    tensors: list[TensorEntry] = []
    if not isinstance(doc["tensors"], list):
        raise _bad(path, "tensor index is not a list")
    for item in doc["tensors"]:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[2], list)):
            raise _bad(path, "a tensor index entry is malformed")
        shape = tuple(_int(d, path, "tensor dimension") for d in item[2])
        tensors.append(TensorEntry(str(item[0]), str(item[1]), shape))
    return ArtifactHeader(
        version=version,
        model_id=doc["model_id"],
        created_at=doc["created_at"],
        cipher=doc["cipher"],
        chunk_size=chunk_size,
        data_key=data_key,
        files=tuple(files),
        tensors=tuple(tensors),
        header_hash=hashlib.sha256(prefix + body).digest(),
        header_end=PREFIX.size + hlen,
    )


def inspect_artifact(path: Path) -> ArtifactHeader:
    """Read the header of the artifact at ``path`` without any key (``bastion model inspect``)."""
    try:
        with path.open("rb") as fh:
            return read_header(fh, path)
    except OSError as exc:
        raise ArtifactFormatError(f"cannot read {path}: {exc.strerror}") from None
