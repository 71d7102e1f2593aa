"""Fetching what goes into a bundle, through a cache: wheels, Bastion's own wheel, Debian debs.

Everything is downloaded into ``CACHE/{wheels,debs,own}`` and then hard-linked (or copied) into
the bundle, so a rebuild downloads nothing that is already there. Downloads happen at BUILD
time only; the installed system never fetches anything.

Debian packages: ``softhsm2`` and the closure of its ``Depends``/``Pre-Depends`` (first
alternative of each; a virtual package by its first provider), stopping at packages every Debian
12 system has: ``Essential: yes`` or ``Priority: required`` (dpkg, tar, debconf, ...) and the
C/C++ runtime that those already pull in (:data:`DEBIAN_BASE`). For bookworm that is softhsm2,
libsofthsm2, softhsm2-common, ucf, sensible-utils, libsqlite3-0 and libssl3. ``install.sh``
installs a deb only when the host lacks that package or has an older version.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.bundle._lock import LockEntry, normalize_name
from gateway.bundle.errors import FetchError

__all__ = [
    "DEBIAN_BASE",
    "DEBIAN_ROOTS",
    "DebPackage",
    "build_own_wheel",
    "debian_closure",
    "download_debs",
    "download_wheels",
    "link_or_copy",
    "sha256_file",
]

DEBIAN_ROOTS = ("softhsm2",)
# Present on every Debian 12 system although not Priority: required (the essential set and apt
# depend on them). See the module docstring.
DEBIAN_BASE = frozenset({"libc6", "libgcc-s1", "gcc-12-base", "libstdc++6", "zlib1g"})
_DOWNLOAD_TIMEOUT_S = 1800
_CHUNK = 1 << 20

Progress = Callable[[str], None]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (same filesystem), else copy it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _run(argv: list[str], *, what: str, cwd: Path | None = None, timeout: float) -> str:
    try:
        result = subprocess.run(
            argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise FetchError(f"{what}: {argv[0]} is not installed on the build machine") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"{what}: gave up after {timeout:.0f} s") from None
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-8:])
        raise FetchError(f"{what} failed (exit {result.returncode}):\n{tail}")
    return result.stdout


def _wheel_key(filename: str) -> str:
    return normalize_name(filename.split("-", 1)[0])


def download_wheels(
    entries: Sequence[LockEntry], cache: Path, python: Path, progress: Progress
) -> dict[str, Path]:
    """Download (or reuse from ``cache``) the wheel of every entry; return {name key: file}.

    ``pip download --require-hashes --only-binary=:all: --no-deps`` with the lock lines as the
    requirements: a file whose hash is not the locked one is an error, not a silent substitute.
    """
    cache.mkdir(parents=True, exist_ok=True)
    by_hash = {sha256_file(p): p for p in cache.glob("*.whl")}
    missing = [e for e in entries if e.sha256 not in by_hash]
    if missing:
        progress(f"downloading {len(missing)} wheels into {cache}")
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as handle:
            handle.write("\n".join(e.line() for e in missing) + "\n")
            requirements = Path(handle.name)
        try:
            _run(
                [
                    *(str(python), "-m", "pip", "download", "--quiet", "--no-deps"),
                    *("--require-hashes", "--only-binary=:all:", "-d", str(cache)),
                    *("-r", str(requirements)),
                ],
                what="pip download",
                timeout=_DOWNLOAD_TIMEOUT_S,
            )
        finally:
            requirements.unlink()
        by_hash = {sha256_file(p): p for p in cache.glob("*.whl")}
    found: dict[str, Path] = {}
    for entry in entries:
        path = by_hash.get(entry.sha256)
        if path is None or _wheel_key(path.name) != entry.key:
            raise FetchError(
                f"no wheel for {entry.name}=={entry.version} with the locked SHA-256 in {cache}; "
                "the index serves another file: check the index, or regenerate the lock"
            )
        found[entry.key] = path
    return found


_OWN_SOURCES = ("pyproject.toml", "README.md", "gateway", "pki", "inference")


def _source_digest(repo: Path) -> str:
    digest = hashlib.sha256()
    for name in _OWN_SOURCES:
        root = repo / name
        files = [root] if root.is_file() else sorted(root.rglob("*"))
        for path in files:
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                digest.update(str(path.relative_to(repo)).encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def build_own_wheel(repo: Path, cache: Path, python: Path, progress: Progress) -> Path:
    """Bastion's wheel (``pip wheel --no-deps``), built in a scratch copy of the sources so the
    working tree gets no ``build/`` or ``*.egg-info``; cached by a digest of the sources."""
    slot = cache / _source_digest(repo)[:24]
    existing = sorted(slot.glob("bastion_gateway-*.whl"))
    if existing:
        return existing[0]
    progress("building Bastion's own wheel (pip wheel --no-deps)")
    with tempfile.TemporaryDirectory(prefix="bastion-src-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for name in _OWN_SOURCES:
            path = repo / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=ignore)
            else:
                shutil.copy2(path, src / name)
        out = Path(tmp) / "out"
        _run(
            [str(python), "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(src)],
            what="building Bastion's wheel",
            timeout=_DOWNLOAD_TIMEOUT_S,
        )
        wheels = sorted(out.glob("bastion_gateway-*.whl"))
        if len(wheels) != 1:
            raise FetchError(f"pip wheel produced {len(wheels)} Bastion wheels, expected 1")
        slot.mkdir(parents=True, exist_ok=True)
        target = slot / wheels[0].name
        shutil.copy2(wheels[0], target)
    return target


# -- Debian ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DebPackage:
    name: str
    version: str
    architecture: str
    path: Path


def _apt_show(name: str) -> dict[str, str]:
    text = _run(
        ["apt-cache", "show", "--no-all-versions", name], what=f"apt-cache show {name}", timeout=120
    )
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # first (candidate) stanza only
        if ":" in line and not line.startswith(" "):
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return fields


def _apt_depends(name: str) -> list[str]:
    text = _run(
        [
            *("apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts"),
            *("--no-breaks", "--no-replaces", "--no-enhances", name),
        ],
        what=f"apt-cache depends {name}",
        timeout=120,
    )
    wanted: list[str] = []
    alternative = False  # inside an "a | b" group whose first member is already taken
    lines = text.splitlines()
    for index, line in enumerate(lines):
        match = re.match(r"^ ([ |])(Pre)?Depends: (\S+)$", line)
        if match is None:
            continue
        is_or, _, target = match.groups()
        if not alternative:
            if target.startswith("<"):  # virtual: its providers are listed indented below
                following = lines[index + 1 : index + 2]
                if following and following[0].startswith("    "):
                    target = following[0].strip()
            if not target.startswith("<"):
                wanted.append(target)
        alternative = is_or == "|"
    return wanted


def debian_closure(roots: Sequence[str] = DEBIAN_ROOTS) -> list[str]:
    """The packages to ship: ``roots`` and their dependencies minus the Debian 12 base."""
    chosen: list[str] = []
    queue = list(roots)
    seen: set[str] = set()
    while queue:
        name = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        fields = _apt_show(name)
        base = (
            name in DEBIAN_BASE
            or fields.get("Essential") == "yes"
            or fields.get("Priority") == "required"
        )
        if base and name not in roots:
            continue
        chosen.append(name)
        queue.extend(_apt_depends(name))
    return chosen


def download_debs(names: Sequence[str], cache: Path, progress: Progress) -> list[DebPackage]:
    """``apt-get download`` each package's candidate version into ``cache`` (reused when there)."""
    cache.mkdir(parents=True, exist_ok=True)
    packages = []
    for name in names:
        fields = _apt_show(name)
        version, arch = fields.get("Version"), fields.get("Architecture")
        if not version or not arch:
            raise FetchError(
                f"apt-cache knows no installable version of {name}; run apt-get update"
            )
        filename = f"{name}_{version.replace(':', '%3a')}_{arch}.deb"
        path = cache / filename
        if not path.exists():
            progress(f"apt-get download {name}={version}")
            _run(
                ["apt-get", "download", "-q", f"{name}={version}"],
                what=f"apt-get download {name}",
                cwd=cache,
                timeout=_DOWNLOAD_TIMEOUT_S,
            )
        if not path.exists():
            raise FetchError(f"apt-get download {name} did not leave {filename} in {cache}")
        expected = fields.get("SHA256")
        if expected and sha256_file(path) != expected:
            path.unlink()
            raise FetchError(
                f"{filename}: SHA-256 differs from the apt index; deleted it, rebuild to refetch"
            )
        packages.append(DebPackage(name, version, arch, path))
    return packages
