"""The stdlib-only verifier (``deploy/airgap/verify_bundle.py``) and ``install.sh``'s refusals.

The pure-Python Ed25519 and ECDSA P-256 are checked against RFC 8032's vectors and against
``cryptography`` (and the HSM's signer); the bundle checks against a small signed bundle made
with the same manifest code as ``bastion bundle build``, tampered in every way the issue names.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from gateway.bundle._manifest import write_signed_manifest
from pki.hsm import HsmConfig, HsmSession, HsmSigner
from pki.signing import FileSigner
from tests.airgap._tamper import INSTALL_SH, TAMPERS, VERIFIER, Tamper, run_install


def _load_verifier() -> ModuleType:
    spec = importlib.util.spec_from_file_location("verify_bundle", VERIFIER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vb = _load_verifier()

# RFC 8032 section 7.1, TEST 1-3: (secret key, public key, message, signature).
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
]


@pytest.mark.parametrize(
    ("secret", "public", "message", "signature"), RFC8032, ids=["test1", "test2", "test3"]
)
def test_ed25519_accepts_rfc8032_vectors(
    secret: str, public: str, message: str, signature: str
) -> None:
    """The pure-Python Ed25519 accepts RFC 8032's test vectors (checked against cryptography too)."""
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    raw = serialization.Encoding.Raw
    assert key.public_key().public_bytes(raw, serialization.PublicFormat.Raw).hex() == public
    assert key.sign(bytes.fromhex(message)).hex() == signature
    assert vb.ed25519_verify(
        bytes.fromhex(public), bytes.fromhex(signature), bytes.fromhex(message)
    )


def _flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize(
    ("change", "valid"),
    [
        ("none", True),
        ("message", False),
        ("signature-r", False),
        ("signature-s", False),
        ("s-plus-l", False),
    ],
    ids=["valid", "altered-message", "altered-r", "altered-s", "non-canonical-s"],
)
def test_ed25519_matches_cryptography(change: str, valid: bool) -> None:
    """A signature made by cryptography verifies; any altered byte, or S not reduced mod L, does not."""
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    message = os.urandom(200)
    signature = key.sign(message)
    if change == "message":
        message = _flip(message, 7)
    elif change == "signature-r":
        signature = _flip(signature, 3)
    elif change == "signature-s":
        signature = _flip(signature, 40)
    elif change == "s-plus-l":
        s = int.from_bytes(signature[32:], "little") + vb._L
        signature = signature[:32] + s.to_bytes(32, "little")
    assert vb.ed25519_verify(public, signature, message) is valid


def _pem(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    ("change", "valid"),
    [("none", True), ("message", False), ("signature", False), ("other-key", False)],
    ids=["valid", "altered-message", "altered-signature", "other-key"],
)
def test_ecdsa_p256_matches_cryptography(change: str, valid: bool) -> None:
    """An ECDSA P-256/SHA-256 DER signature from cryptography verifies; alterations do not."""
    key = ec.generate_private_key(ec.SECP256R1())
    message = os.urandom(300)
    signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
    public = key.public_key()
    if change == "message":
        message = _flip(message, 0)
    elif change == "signature":
        signature = _flip(signature, len(signature) - 2)
    elif change == "other-key":
        public = ec.generate_private_key(ec.SECP256R1()).public_key()
    parsed = vb.PublicKey.from_pem(_pem(public))
    assert parsed.algorithm == "ecdsa-p256-sha256"
    assert parsed.verify(signature, message) is valid


@pytest.mark.hsm
def test_ecdsa_p256_verifies_the_hsm_signer(hsm_config: HsmConfig) -> None:
    """A manifest signed by the HSM's key (HsmSigner, SoftHSM2) verifies with the pure-Python code."""
    with HsmSession(hsm_config) as session:
        signer = HsmSigner(session)
        message = b'{"format": "bastion-bundle/1"}\n'
        signature = signer.sign(message)
        pem = signer.public_key_pem()
    key = vb.PublicKey.from_pem(pem)
    assert key.verify(signature, message)
    assert not key.verify(signature, message + b" ")


@pytest.mark.parametrize(
    ("pem", "words"),
    [
        (b"not a key", "not a PEM 'PUBLIC KEY'"),
        (
            _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()),
            "unsupported public key",
        ),
        (_pem(ec.generate_private_key(ec.SECP384R1()).public_key()), "not a valid P-256 key"),
    ],
    ids=["garbage", "rsa", "p384"],
)
def test_public_key_refuses_unsupported_keys(pem: bytes, words: str) -> None:
    """Only Ed25519 and P-256 public keys are accepted, and the refusal says why."""
    with pytest.raises(vb.VerifyError, match=words):
        vb.PublicKey.from_pem(pem)


# -- a small signed bundle ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[FileSigner, Path, FileSigner]:
    directory = tmp_path_factory.mktemp("bundle-keys")
    signer = FileSigner.generate(directory / "key.pem", key_id="test-bundle")
    pub = directory / "key.pub.pem"
    pub.write_bytes(signer.public_key_pem())
    other = FileSigner.generate(directory / "other.pem", key_id="other")
    return signer, pub, other


@pytest.fixture
def small_bundle(tmp_path: Path, keys: tuple[FileSigner, Path, FileSigner]) -> Path:
    """A signed bundle with a few files, the real install.sh and verifier."""
    bundle = tmp_path / "bundle"
    (bundle / "wheels").mkdir(parents=True)
    (bundle / "policies").mkdir()
    (bundle / "wheels" / "demo-1.0-py3-none-any.whl").write_bytes(os.urandom(4096))
    (bundle / "wheels" / "pip-0-py3-none-any.whl").write_bytes(os.urandom(1024))
    (bundle / "policies" / "default.yaml").write_text("version: 1\n")
    shutil.copy(INSTALL_SH, bundle / "install.sh")
    shutil.copy(VERIFIER, bundle / "verify_bundle.py")
    write_signed_manifest(bundle, keys[0], name="demo", version="1.0", facts={})
    return bundle


def _verify(bundle: Path, pubkey: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    # -I: isolated, as install.sh runs it; proves the verifier needs nothing but the stdlib.
    return subprocess.run(
        [sys.executable, "-I", str(VERIFIER), str(bundle), "--pubkey", str(pubkey), *extra],
        capture_output=True,
        text=True,
        check=False,
    )


def test_verifier_accepts_an_intact_bundle(
    small_bundle: Path, keys: tuple[FileSigner, Path, FileSigner]
) -> None:
    """An untouched bundle verifies, and the key's fingerprint is printed for the operator."""
    result = _verify(small_bundle, keys[1])
    assert result.returncode == 0, result.stderr
    fingerprint = vb.PublicKey.from_pem(keys[1].read_bytes()).fingerprint
    assert f"public key sha256:{fingerprint}" in result.stdout
    assert "OK files: 5 files" in result.stdout


@pytest.mark.parametrize("tamper", list(TAMPERS.values()), ids=list(TAMPERS))
def test_install_refuses_a_tampered_bundle_and_installs_nothing(
    tamper: Tamper, small_bundle: Path, keys: tuple[FileSigner, Path, FileSigner], tmp_path: Path
) -> None:
    """install.sh refuses a tampered bundle, names the problem, and leaves no prefix behind."""
    words = tamper(small_bundle, keys[2])
    prefix = tmp_path / "prefix"
    result = run_install(small_bundle, keys[1], prefix)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"REFUSED: {words}" in result.stderr
    assert "nothing was installed" in result.stderr
    assert not prefix.exists()


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("symlink", "policies/default.yaml: not a regular file"),
        ("wrong-fingerprint", "not the key you were given out of band"),
        ("missing-signature", "manifest.sig: missing"),
    ],
    ids=["symlink", "wrong-fingerprint", "missing-signature"],
)
def test_verifier_refuses_links_wrong_keys_and_missing_signatures(
    case: str, words: str, small_bundle: Path, keys: tuple[FileSigner, Path, FileSigner]
) -> None:
    """A file swapped for a symlink, a key with another fingerprint, or no signature is refused."""
    extra: list[str] = []
    if case == "symlink":
        target = small_bundle / "policies" / "default.yaml"
        target.unlink()
        target.symlink_to("/etc/hostname")
    elif case == "wrong-fingerprint":
        extra = ["--fingerprint", "00" * 32]
    else:
        (small_bundle / "manifest.sig").unlink()
    result = _verify(small_bundle, keys[1], *extra)
    assert result.returncode == 2
    assert words in result.stderr


def test_verifier_refuses_unsafe_paths_even_when_signed(
    tmp_path: Path, keys: tuple[FileSigner, Path, FileSigner]
) -> None:
    """A signed manifest naming a path outside the bundle is refused, not followed."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    manifest = b'{"format": "bastion-bundle/1", "files": [{"path": "../etc/passwd", "sha256": "0", "size": 1}]}'
    (bundle / "manifest.json").write_bytes(manifest)
    (bundle / "manifest.sig").write_bytes(keys[0].sign(manifest))
    result = _verify(bundle, keys[1])
    assert result.returncode == 2
    assert "unsafe or reserved path '../etc/passwd'" in result.stderr
