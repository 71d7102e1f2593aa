"""The encrypted model artifact on a tiny random llama: round trip, tamper matrix, key and
model-id refusals, and no plaintext or data key on disk."""

from __future__ import annotations

import json
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from inference.artifact import (
    ArtifactError,
    ArtifactFormatError,
    ArtifactKeyError,
    ArtifactTamperedError,
    ModelDirError,
    ModelIdMismatchError,
    encrypt_model_dir,
    inspect_artifact,
    load_encrypted_model,
    load_model_dir,
)
from inference.artifact._format import PREFIX, TAG_BYTES, data_key_aad
from pki.hsm import HsmConfig, HsmSession
from tests.fixtures.softhsm import SoftHsm

pytestmark = pytest.mark.hsm

CHUNK = 64 * 1024  # small chunks so the tiny model spans several


@pytest.fixture(scope="module")
def artifact(
    tiny_model_dir: Path, hsm_config: HsmConfig, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("artifact") / "tiny.bmdl"
    with HsmSession(hsm_config) as session:
        encrypt_model_dir(tiny_model_dir, out, session, model_id="tiny-llama", chunk_size=CHUNK)
    return out


def _greedy(loaded: Any, prompt: str = "Hello world") -> list[int]:
    ids = loaded.tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = loaded.model.generate(**ids, max_new_tokens=8, do_sample=False)
    return [int(t) for t in out[0]]


def test_round_trip_matches_plaintext(
    artifact: Path, tiny_model_dir: Path, hsm_config: HsmConfig
) -> None:
    """The model loaded through the HSM generates exactly what the plaintext directory does."""
    encrypted = load_encrypted_model(artifact, hsm_config, expected_model_id="tiny-llama")
    plain = load_model_dir(tiny_model_dir)
    assert encrypted.model_id == "tiny-llama"
    assert encrypted.stats.source == "encrypted"
    assert encrypted.stats.chunks > 1
    assert _greedy(encrypted) == _greedy(plain)
    chat = encrypted.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat.endswith("<|im_start|>assistant\n")


def test_inspect_shows_header_without_key(artifact: Path, tiny_model_dir: Path) -> None:
    """inspect reports the model id, KEK, files and tensor index without decrypting."""
    facts = inspect_artifact(artifact).facts()
    assert facts["model_id"] == "tiny-llama"
    assert facts["kek_label"] == "bastion-kek"
    assert {f["name"] for f in facts["files"]} == {p.name for p in tiny_model_dir.iterdir()}
    assert facts["parameters"] > 0
    assert facts["tensor_dtypes"] == ["F32"]
    json.dumps(facts)


def test_no_plaintext_or_data_key_in_artifact(
    artifact: Path, tiny_model_dir: Path, hsm_session: HsmSession
) -> None:
    """Neither the data key nor any stretch of the weights or config appears in the file."""
    header = inspect_artifact(artifact)
    data_key = bytes(
        hsm_session.unwrap_data_key_plaintext(header.data_key, aad=data_key_aad("tiny-llama"))
    )
    blob = artifact.read_bytes()
    assert data_key not in blob
    assert data_key.hex().encode() not in blob
    weights = (tiny_model_dir / "model.safetensors").read_bytes()
    for offset in range(len(weights) // 2, len(weights) - 64, len(weights) // 7):
        assert weights[offset : offset + 32] not in blob
    assert b'"hidden_size"' not in blob  # config.json is encrypted too


class _OpenWatch:
    """Records files opened for writing, via an audit hook (sees every open, C-level too)."""

    installed = False
    active: list[str] | None = None
    thread: int | None = None

    @classmethod
    def hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if event != "open" or cls.active is None or threading.get_ident() != cls.thread:
            return
        path, mode, flags = args
        writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
            isinstance(flags, int) and flags & 0o3 != 0
        )
        if writing:
            cls.active.append(str(path))

    @classmethod
    @contextmanager
    def watching(cls) -> Iterator[list[str]]:
        if not cls.installed:
            sys.addaudithook(cls.hook)  # audit hooks cannot be removed: it stays inert after
            cls.installed = True
        cls.active, cls.thread = [], threading.get_ident()
        try:
            yield cls.active
        finally:
            cls.active, cls.thread = None, None


def test_load_writes_no_file(artifact: Path, hsm_config: HsmConfig, tmp_path: Path) -> None:
    """Loading the artifact opens no file for writing (so no plaintext can land on disk)."""
    before = {p for p in tmp_path.parent.rglob("*")}
    with _OpenWatch.watching() as written:
        loaded = load_encrypted_model(artifact, hsm_config)
    assert written == []
    assert {p for p in tmp_path.parent.rglob("*")} == before
    assert loaded.stats.bytes > 0


def _flip(offset: Callable[[bytes], int]) -> Callable[[bytes], bytes]:
    def mutate(blob: bytes) -> bytes:
        i = offset(blob)
        return blob[:i] + bytes([blob[i] ^ 0x01]) + blob[i + 1 :]

    return mutate


def _header_len(blob: bytes) -> int:
    return int(PREFIX.unpack(blob[: PREFIX.size])[2])


def _data_start(blob: bytes) -> int:
    return PREFIX.size + _header_len(blob) + TAG_BYTES


def _swap_chunks(blob: bytes) -> bytes:
    start, size = _data_start(blob), CHUNK + TAG_BYTES
    # The weights come last and fill whole chunks: swap the last two full chunks.
    end = len(blob) - (len(blob) - start) % size if (len(blob) - start) % size else len(blob)
    a, b = end - 2 * size, end - size
    return blob[:a] + blob[b : b + size] + blob[a:b] + blob[b + size :]


def _edit_header(blob: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new)
    assert old in blob[: _data_start(blob)]
    return blob.replace(old, new, 1)


TAMPER = [
    ("magic", _flip(lambda b: 0), ArtifactFormatError),
    ("version", lambda b: b[:8] + (2).to_bytes(4, "big") + b[12:], ArtifactFormatError),
    ("header-json-syntax", _flip(lambda b: PREFIX.size), ArtifactFormatError),
    (
        "header-file-index",
        lambda b: _edit_header(b, b'"tokenizer_config.json"', b'"tokenizer_config.jsoo"'),
        ArtifactTamperedError,
    ),
    (
        "header-created-at",
        lambda b: _edit_header(b, b'"created_at":"2', b'"created_at":"1'),
        ArtifactTamperedError,
    ),
    ("header-tag", _flip(lambda b: PREFIX.size + _header_len(b)), ArtifactTamperedError),
    ("wrapped-key", lambda b: _edit_wrapped_key(b), ArtifactKeyError),
    ("first-chunk", _flip(lambda b: _data_start(b) + 3), ArtifactTamperedError),
    ("middle-chunk", _flip(lambda b: (_data_start(b) + len(b)) // 2), ArtifactTamperedError),
    ("chunk-tag", _flip(lambda b: _data_start(b) + CHUNK + TAG_BYTES - 1), ArtifactTamperedError),
    ("last-byte", _flip(lambda b: len(b) - 1), ArtifactTamperedError),
    ("chunks-swapped", _swap_chunks, ArtifactTamperedError),
    ("truncated", lambda b: b[: len(b) - 100], ArtifactTamperedError),
    (
        "truncated-to-chunk",
        lambda b: b[: _data_start(b) + CHUNK + TAG_BYTES],
        ArtifactTamperedError,
    ),
    ("extended", lambda b: b + b"\0" * 32, ArtifactTamperedError),
    ("empty", lambda b: b"", ArtifactFormatError),
]


def _edit_wrapped_key(blob: bytes) -> bytes:
    start = blob.index(b'"blob":"') + len(b'"blob":"') + 40
    digit = blob[start : start + 1]
    return blob[:start] + (b"0" if digit != b"0" else b"1") + blob[start + 1 :]


@pytest.mark.parametrize(
    ("mutate", "error"), [(m, e) for _, m, e in TAMPER], ids=[name for name, _, _ in TAMPER]
)
def test_tampered_artifact_is_refused(
    artifact: Path,
    hsm_config: HsmConfig,
    tmp_path: Path,
    mutate: Callable[[bytes], bytes],
    error: type[ArtifactError],
) -> None:
    """Any altered byte, reordered chunk or changed length is refused with the right error."""
    target = tmp_path / "tampered.bmdl"
    original = artifact.read_bytes()
    changed = mutate(original)
    assert changed != original
    target.write_bytes(changed)
    with pytest.raises(error):
        load_encrypted_model(target, hsm_config)


def test_wrong_model_id_is_refused(artifact: Path, hsm_config: HsmConfig) -> None:
    """An artifact holding another model than the one expected is refused before decryption."""
    with pytest.raises(ModelIdMismatchError, match="tiny-llama"):
        load_encrypted_model(artifact, hsm_config, expected_model_id="smollm2")


def test_wrong_token_is_refused(artifact: Path, softhsm: SoftHsm) -> None:
    """A token whose KEK has the same label but other key material cannot load the artifact."""
    with pytest.raises(ArtifactKeyError, match="KEK id"):
        load_encrypted_model(artifact, softhsm.other_config)


def test_missing_kek_is_refused(
    tiny_model_dir: Path, hsm_config: HsmConfig, softhsm: SoftHsm, tmp_path: Path
) -> None:
    """An artifact wrapped under a KEK the token does not hold is refused as a key error."""
    second = HsmConfig(
        module=hsm_config.module,
        token_label=hsm_config.token_label,
        pin=hsm_config.pin,
        kek_label="bastion-kek-b",
    )
    with HsmSession(second) as session:
        assert "kek" in session.ensure_keys()
        out = encrypt_model_dir(tiny_model_dir, tmp_path / "b.bmdl", session, chunk_size=CHUNK)
    assert out.data_key.kek_label == "bastion-kek-b"
    with pytest.raises(ArtifactKeyError, match="bastion-kek-b"):
        load_encrypted_model(tmp_path / "b.bmdl", softhsm.other_config)


@pytest.mark.parametrize(
    ("prepare", "words"),
    [
        (lambda d: (d / "model.safetensors").unlink(), "model.safetensors"),
        (lambda d: (d / "sub").mkdir(), "not a plain file"),
        (lambda d: (d / "model.safetensors.index.json").write_text("{}"), "sharded"),
    ],
    ids=["no-weights", "subdirectory", "sharded"],
)
def test_encrypt_refuses_odd_model_dirs(
    tiny_model_dir: Path,
    hsm_session: HsmSession,
    tmp_path: Path,
    prepare: Callable[[Path], object],
    words: str,
) -> None:
    """encrypt refuses a directory that is not a single-file HF model, and writes nothing."""
    src = tmp_path / "src"
    shutil.copytree(tiny_model_dir, src)
    prepare(src)
    with pytest.raises(ModelDirError, match=words):
        encrypt_model_dir(src, tmp_path / "out.bmdl", hsm_session)
    assert not (tmp_path / "out.bmdl").exists()
    assert not (tmp_path / "out.bmdl.partial").exists()


def test_encrypt_refuses_to_overwrite(
    artifact: Path, tiny_model_dir: Path, hsm_session: HsmSession
) -> None:
    """An existing artifact is never overwritten."""
    with pytest.raises(ArtifactError, match="already exists"):
        encrypt_model_dir(tiny_model_dir, artifact, hsm_session)


def test_inconsistent_weights_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A config that does not fit the weights is refused rather than half-loaded."""
    src = tmp_path / "src"
    shutil.copytree(tiny_model_dir, src)
    config = json.loads((src / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (src / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="do not fit"):
        load_model_dir(src)
