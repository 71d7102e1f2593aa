"""``sbom.cdx.json``: a CycloneDX 1.5 JSON SBOM of the bundle, written from metadata offline.

Python components come from each wheel's ``*.dist-info/METADATA`` (name, version, summary,
licence as ``License-Expression``, ``License`` or the licence classifiers), Debian components
from the package control fields. Every component carries the SHA-256 of the file shipped and a
package URL (``pkg:pypi/...``, ``pkg:deb/debian/...``). Spec:
https://cyclonedx.org/docs/1.5/json/
"""

from __future__ import annotations

import datetime as dt
import email.parser
import uuid
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from gateway.bundle._fetch import DebPackage, sha256_file
from gateway.bundle._lock import normalize_name
from gateway.bundle.errors import BundleLayoutError

__all__ = ["PythonComponent", "cyclonedx", "deb_component", "wheel_component"]

_MAX_LICENSE_NAME = 120


@dataclass(frozen=True, slots=True)
class PythonComponent:
    name: str
    version: str
    summary: str
    licenses: tuple[dict[str, Any], ...]


def _read_metadata(wheel: Path) -> email.message.Message:
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = [
                n
                for n in archive.namelist()
                if n.count("/") == 1 and n.endswith(".dist-info/METADATA")
            ]
            if len(names) != 1:
                raise BundleLayoutError(f"{wheel.name}: expected one .dist-info/METADATA")
            raw = archive.read(names[0])
    except (OSError, zipfile.BadZipFile) as exc:
        raise BundleLayoutError(
            f"{wheel.name}: not a readable wheel ({type(exc).__name__})"
        ) from None
    return email.parser.BytesParser().parsebytes(raw, headersonly=True)


def _licenses(meta: email.message.Message) -> tuple[dict[str, Any], ...]:
    expression = meta.get("License-Expression")
    if expression:
        return ({"expression": str(expression).strip()},)
    text = str(meta.get("License") or "").strip()
    if text and "\n" not in text and len(text) <= _MAX_LICENSE_NAME and text != "UNKNOWN":
        return ({"license": {"name": text}},)
    names = [
        str(c).split("::")[-1].strip()
        for c in meta.get_all("Classifier") or []
        if str(c).startswith("License ::") and str(c).count("::") >= 2
    ]
    return tuple({"license": {"name": n}} for n in names)


def wheel_component(wheel: Path) -> PythonComponent:
    meta = _read_metadata(wheel)
    return PythonComponent(
        name=str(meta["Name"]),
        version=str(meta["Version"]),
        summary=str(meta.get("Summary") or ""),
        licenses=_licenses(meta),
    )


def _component(
    *, purl: str, name: str, version: str, path: Path, rel: str, extra: dict[str, Any]
) -> dict[str, Any]:
    return {
        "type": "library",
        "bom-ref": purl,
        "name": name,
        "version": version,
        "purl": purl,
        "hashes": [{"alg": "SHA-256", "content": sha256_file(path)}],
        **extra,
        "properties": [{"name": "bastion:bundle-path", "value": rel}],
    }


def pypi_purl(name: str, version: str) -> str:
    return f"pkg:pypi/{normalize_name(name)}@{quote(version, safe='')}"


def deb_component(deb: DebPackage, rel: str) -> dict[str, Any]:
    purl = f"pkg:deb/debian/{deb.name}@{quote(deb.version, safe='')}?arch={deb.architecture}&distro=debian-12"
    return _component(
        purl=purl, name=deb.name, version=deb.version, path=deb.path, rel=rel, extra={}
    )


def cyclonedx(
    *,
    root_name: str,
    root_version: str,
    wheels: Sequence[tuple[Path, str, str]],
    debs: Sequence[tuple[DebPackage, str]],
) -> dict[str, Any]:
    """The SBOM. ``wheels``: (file, bundle path, lock group); ``debs``: (package, bundle path)."""
    root_ref = pypi_purl(root_name, root_version)
    components = []
    for wheel, rel, group in wheels:
        info = wheel_component(wheel)
        purl = pypi_purl(info.name, info.version)
        if purl == root_ref:
            continue
        extra: dict[str, Any] = {}
        if info.summary:
            extra["description"] = info.summary
        if info.licenses:
            extra["licenses"] = list(info.licenses)
        component = _component(
            purl=purl, name=info.name, version=info.version, path=wheel, rel=rel, extra=extra
        )
        component["properties"].append({"name": "bastion:lock-group", "value": group})
        components.append(component)
    components += [deb_component(deb, rel) for deb, rel in debs]
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
            "tools": {
                "components": [
                    {"type": "application", "name": "bastion bundle build", "version": root_version}
                ]
            },
            "component": {
                "type": "application",
                "bom-ref": root_ref,
                "name": root_name,
                "version": root_version,
                "purl": root_ref,
            },
        },
        "components": components,
        "dependencies": [
            {"ref": root_ref, "dependsOn": [c["bom-ref"] for c in components]},
        ],
    }
