"""``manifest.json`` (every file with SHA-256 and size) and its detached signature.

The signature in ``manifest.sig`` is over the exact bytes of ``manifest.json``: raw 64 bytes for
Ed25519, DER ``ECDSA-Sig-Value`` for the HSM's ECDSA P-256 key. Both can also be checked with
OpenSSL alone (see ``deploy/airgap/README.md``). ``deploy/airgap/verify_bundle.py`` is the
stdlib-only verifier that ``install.sh`` runs; the format name below is shared with it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from gateway.bundle._fetch import sha256_file
from gateway.bundle.errors import BundleLayoutError
from pki.signing import Signer

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "SIGNATURE_NAME",
    "file_entries",
    "public_key_fingerprint",
    "write_signed_manifest",
]

MANIFEST_FORMAT = "bastion-bundle/1"
MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"


def public_key_fingerprint(public_key_pem: bytes) -> str:
    """SHA-256 (hex) over the DER SubjectPublicKeyInfo, as the verifier and OpenSSL print it."""
    key = serialization.load_pem_public_key(public_key_pem)
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def file_entries(root: Path) -> list[dict[str, Any]]:
    """Every regular file under ``root`` (manifest and signature excepted), sorted by path."""
    entries = []
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            rel = path.relative_to(root).as_posix()
            if rel in (MANIFEST_NAME, SIGNATURE_NAME):
                continue
            if path.is_symlink() or not path.is_file():
                raise BundleLayoutError(f"{rel}: bundles hold regular files only, not links")
            entries.append({"path": rel, "sha256": sha256_file(path), "size": path.stat().st_size})
    return sorted(entries, key=lambda e: e["path"])


def write_signed_manifest(
    root: Path, signer: Signer, *, name: str, version: str, facts: Mapping[str, Any]
) -> dict[str, Any]:
    """Write ``manifest.json`` for ``root`` and ``manifest.sig`` over its bytes; return it."""
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "version": version,
        "created": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        **facts,
        "signer": {
            "algorithm": signer.algorithm,
            "key_id": signer.key_id,
            "public_key_sha256": public_key_fingerprint(signer.public_key_pem()),
        },
        "files": file_entries(root),
    }
    data = (json.dumps(manifest, indent=1, sort_keys=False) + "\n").encode()
    (root / MANIFEST_NAME).write_bytes(data)
    (root / SIGNATURE_NAME).write_bytes(signer.sign(data))
    return manifest
