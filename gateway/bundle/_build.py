"""``build_bundle``: assemble, describe and sign one offline bundle.

Layout of the bundle directory::

    manifest.json  manifest.sig      every other file with SHA-256 and size; signature over it
    sbom.cdx.json                    CycloneDX 1.5: Python wheels and Debian packages
    install.sh  verify_bundle.py     the installer and its stdlib-only verifier
    README.md                        the operator's procedure (deploy/airgap/README.md)
    requirements.lock                the lock for exactly the wheels shipped (+ Bastion's own)
    wheels/*.whl  debs/*.deb         Python wheels; softhsm2 and its non-base dependencies
    policies/                        the policies, their JSON Schema and their tests
    models/ARTIFACT                  the encrypted model artifact (--with-model only)

The bundle is assembled in a hidden sibling directory and renamed into place at the end, so a
failed build never leaves a half bundle under the requested name.
"""

from __future__ import annotations

import json
import shutil
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.bundle._fetch import (
    build_own_wheel,
    debian_closure,
    download_debs,
    download_wheels,
    link_or_copy,
    sha256_file,
)
from gateway.bundle._lock import WORKER_GROUP, LockEntry, parse_lock, render_lock
from gateway.bundle._manifest import write_signed_manifest
from gateway.bundle._sbom import cyclonedx
from gateway.bundle.errors import BundleLayoutError, LockError
from pki.signing import Signer

__all__ = ["BuildOptions", "BuildSummary", "build_bundle"]

_AIRGAP_FILES = (("install.sh", 0o755), ("verify_bundle.py", 0o755), ("README.md", 0o644))

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class BuildOptions:
    """What to build. ``python`` is the interpreter whose pip downloads and builds wheels."""

    out: Path
    repo: Path
    lock: Path
    cache: Path
    python: Path
    with_model: Path | None = None
    without_worker: bool = False


@dataclass(frozen=True, slots=True)
class BuildSummary:
    out: str
    name: str
    version: str
    files: int
    bytes: int
    wheels: int
    debs: int
    without_worker: bool
    model: str | None
    algorithm: str
    key_id: str
    public_key_sha256: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _project(repo: Path) -> tuple[str, str]:
    try:
        project = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))["project"]
        return str(project["name"]), str(project["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise BundleLayoutError(
            f"cannot read the project name and version from {repo / 'pyproject.toml'} "
            f"({type(exc).__name__})"
        ) from None


def _prepare_out(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BundleLayoutError(
            f"{out} already exists and is not an empty directory; name a new directory "
            "(bundles are never rebuilt in place)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    return partial


def build_bundle(
    options: BuildOptions, signer: Signer, progress: Progress = lambda _: None
) -> BuildSummary:
    """Build, describe and sign the bundle in ``options.out``; return what was built."""
    started = time.monotonic()
    name, version = _project(options.repo)
    if options.with_model is not None and not options.with_model.is_file():
        raise BundleLayoutError(f"--with-model {options.with_model}: no such file")
    try:
        lock_text = options.lock.read_text(encoding="utf-8")
    except OSError as exc:
        raise LockError(
            f"cannot read the lock {options.lock}: {exc.strerror}; run `make lock`"
        ) from None
    entries = [
        e
        for e in parse_lock(lock_text, source=str(options.lock))
        if not (options.without_worker and e.group == WORKER_GROUP)
    ]
    for filename, _mode in _AIRGAP_FILES:
        if not (options.repo / "deploy" / "airgap" / filename).is_file():
            raise BundleLayoutError(
                f"{options.repo}/deploy/airgap/{filename} is missing; build from a full checkout"
            )
    partial = _prepare_out(options.out)
    try:
        progress(f"[1/6] wheels: {len(entries)} locked distributions")
        found = download_wheels(entries, options.cache / "wheels", options.python, progress)
        own = build_own_wheel(options.repo, options.cache / "own", options.python, progress)
        own_entry = LockEntry(name, version, sha256_file(own), "bastion")
        shipped: list[tuple[Path, str, str]] = []
        for entry in [*entries, own_entry]:
            source = own if entry is own_entry else found[entry.key]
            rel = f"wheels/{source.name}"
            link_or_copy(source, partial / rel)
            shipped.append((source, rel, entry.group))
        (partial / "requirements.lock").write_text(render_lock([*entries, own_entry]))

        progress("[2/6] Debian packages: softhsm2 and its non-base dependencies")
        debs = download_debs(debian_closure(), options.cache / "debs", progress)
        deb_rels = []
        for deb in debs:
            rel = f"debs/{deb.path.name}"
            link_or_copy(deb.path, partial / rel)
            deb_rels.append((deb, rel))

        progress("[3/6] policies, installer, verifier")
        shutil.copytree(
            options.repo / "policies",
            partial / "policies",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        for filename, mode in _AIRGAP_FILES:
            target = partial / filename
            shutil.copyfile(options.repo / "deploy" / "airgap" / filename, target)
            target.chmod(mode)
        model_name = None
        if options.with_model is not None:
            progress(f"[4/6] model artifact {options.with_model.name}")
            model_name = options.with_model.name
            link_or_copy(options.with_model, partial / "models" / model_name)

        progress("[5/6] SBOM (CycloneDX 1.5)")
        sbom = cyclonedx(root_name=name, root_version=version, wheels=shipped, debs=deb_rels)
        (partial / "sbom.cdx.json").write_text(json.dumps(sbom, indent=1) + "\n")

        progress(f"[6/6] manifest and signature ({signer.algorithm}, key {signer.key_id})")
        facts = {
            "target": {"python": "cp311", "platform": "manylinux_x86_64", "debian": "12"},
            "contents": {
                "worker": not options.without_worker,
                "model": model_name,
                "wheels": len(shipped),
                "debs": len(debs),
            },
        }
        manifest = write_signed_manifest(partial, signer, name=name, version=version, facts=facts)
        if options.out.exists():
            options.out.rmdir()  # checked empty above
        partial.rename(options.out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    files = manifest["files"]
    return BuildSummary(
        out=str(options.out),
        name=name,
        version=version,
        files=len(files) + 2,
        bytes=sum(f["size"] for f in files)
        + sum((options.out / n).stat().st_size for n in ("manifest.json", "manifest.sig")),
        wheels=len(shipped),
        debs=len(debs),
        without_worker=options.without_worker,
        model=model_name,
        algorithm=signer.algorithm,
        key_id=signer.key_id,
        public_key_sha256=manifest["signer"]["public_key_sha256"],
        seconds=round(time.monotonic() - started, 1),
    )
