"""The signed offline bundle for air-gapped sites (issue #8).

``build_bundle`` collects the wheels of Bastion and of every locked dependency, the Debian
packages needed at run time (softhsm2 and its non-base dependencies), the policies, optionally
the encrypted model artifact, and ``deploy/airgap/{install.sh,verify_bundle.py,README.md}``; it
writes a CycloneDX SBOM, a manifest of every file (SHA-256, size) and a detached signature over
the manifest with a :class:`pki.signing.Signer` (a file key in development, the HSM's key in
production). ``generate_lock`` writes ``deploy/airgap/requirements.lock``.

Verification happens on the target with the stdlib-only ``deploy/airgap/verify_bundle.py``.
Errors: :mod:`gateway.bundle.errors`.
"""

from __future__ import annotations

from gateway.bundle._build import BuildOptions, BuildSummary, build_bundle
from gateway.bundle._lock import LockEntry, generate_lock, parse_lock, render_lock
from gateway.bundle._manifest import MANIFEST_FORMAT, public_key_fingerprint
from gateway.bundle._sbom import cyclonedx
from gateway.bundle.errors import BundleError, BundleLayoutError, FetchError, LockError

__all__ = [
    "MANIFEST_FORMAT",
    "BuildOptions",
    "BuildSummary",
    "BundleError",
    "BundleLayoutError",
    "FetchError",
    "LockEntry",
    "LockError",
    "build_bundle",
    "cyclonedx",
    "generate_lock",
    "parse_lock",
    "public_key_fingerprint",
    "render_lock",
]
