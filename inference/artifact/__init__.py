"""The encrypted model artifact, and plaintext model directories.

``encrypt_model_dir`` turns an HF model directory into one artifact (layout: ``_format``) under a
fresh AES-256-GCM data key wrapped by the HSM's KEK; ``load_encrypted_model`` unwraps the key in
the HSM and decrypts into memory, never to disk; ``load_model_dir`` loads a plaintext directory
through the same in-memory build; ``inspect_artifact`` reads the header without any key;
``import_gguf`` turns a GGUF file into an HF model directory offline. Errors: ``errors``.
"""

from __future__ import annotations

from inference.artifact._encrypt import DEFAULT_CHUNK_SIZE, encrypt_model_dir
from inference.artifact._format import ArtifactHeader, FileEntry, TensorEntry, inspect_artifact
from inference.artifact._gguf import SMOLLM2_GGUF_NAME, find_smollm2_gguf, import_gguf
from inference.artifact._load import LoadedModel, LoadStats, load_encrypted_model, load_model_dir
from inference.artifact.errors import (
    ArtifactError,
    ArtifactFormatError,
    ArtifactKeyError,
    ArtifactTamperedError,
    ModelDirError,
    ModelIdMismatchError,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "SMOLLM2_GGUF_NAME",
    "ArtifactError",
    "ArtifactFormatError",
    "ArtifactHeader",
    "ArtifactKeyError",
    "ArtifactTamperedError",
    "FileEntry",
    "LoadStats",
    "LoadedModel",
    "ModelDirError",
    "ModelIdMismatchError",
    "TensorEntry",
    "encrypt_model_dir",
    "find_smollm2_gguf",
    "import_gguf",
    "inspect_artifact",
    "load_encrypted_model",
    "load_model_dir",
]
