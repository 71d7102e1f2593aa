"""Ways to tamper with a bundle, each with the words the verifier must name it by.

Every tamper REPLACES files (unlink, then write) rather than editing them in place, so it is
safe on a hard-linked copy of a cached bundle.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from pki.signing import FileSigner

REPO = Path(__file__).resolve().parents[2]
INSTALL_SH = REPO / "deploy" / "airgap" / "install.sh"
VERIFIER = REPO / "deploy" / "airgap" / "verify_bundle.py"

Tamper = Callable[[Path, FileSigner], str]


def _replace(path: Path, data: bytes) -> None:
    path.unlink()
    path.write_bytes(data)


def changed_wheel(bundle: Path, _other: FileSigner) -> str:
    wheel = sorted((bundle / "wheels").glob("*.whl"))[0]
    data = bytearray(wheel.read_bytes())
    data[-1] ^= 0x01
    _replace(wheel, bytes(data))
    return f"wheels/{wheel.name}: SHA-256 mismatch"


def extra_file(bundle: Path, _other: FileSigner) -> str:
    (bundle / "wheels" / "evil-1.0-py3-none-any.whl").write_bytes(b"PK\x03\x04 not listed")
    return "wheels/evil-1.0-py3-none-any.whl: extra file, not listed in the manifest"


def removed_file(bundle: Path, _other: FileSigner) -> str:
    (bundle / "policies" / "default.yaml").unlink()
    return "policies/default.yaml: missing from the bundle"


def bad_signature(bundle: Path, other: FileSigner) -> str:
    _replace(bundle / "manifest.sig", other.sign((bundle / "manifest.json").read_bytes()))
    return "manifest.sig: the signature does not verify"


def manifest_edited(bundle: Path, _other: FileSigner) -> str:
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    target = next(f for f in manifest["files"] if f["path"].startswith("wheels/"))
    (bundle / target["path"]).unlink()
    (bundle / target["path"]).write_bytes(b"replaced")
    target["size"] = len(b"replaced")
    target["sha256"] = "9d2a0bd1aea7bd5a9e3c2e8c36b8e5b2b0a0f2d3c3f1cfc4fdc0c4c93d1b9c5e"
    _replace(bundle / "manifest.json", json.dumps(manifest, indent=1).encode())
    return "manifest.sig: the signature does not verify"


TAMPERS: dict[str, Tamper] = {
    "changed-wheel": changed_wheel,
    "extra-file": extra_file,
    "removed-file": removed_file,
    "bad-signature": bad_signature,
    "manifest-edited-after-signing": manifest_edited,
}


def run_install(
    bundle: Path, pubkey: Path, prefix: Path, *extra: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """The operator's trusted copies of install.sh and the verifier (kept with the public key,
    see deploy/airgap/README.md) run against ``bundle``: a tampered bundle's own install.sh
    proves nothing."""
    return subprocess.run(
        [
            *("bash", str(INSTALL_SH), str(bundle), "--pubkey", str(pubkey)),
            *("--verifier", str(VERIFIER), "--prefix", str(prefix), "--skip-debs", *extra),
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
