"""The internal CA (``pki/ca.py``), with its key in a file and in a real SoftHSM2 token: issuing,
revoking, CRLs, rotation and the errors, each checked with ``cryptography``'s own verification."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from pkcs11 import Attribute, KeyType, ObjectClass

from gateway.cli import main
from pki.ca import CA, parse_lifetime
from pki.errors import CANotFoundError, IssueError, PassphraseError
from pki.hsm import HsmCASigner, HsmSession
from pki.secret import Secret
from tests.fixtures.softhsm import SoftHsm

PASS = Secret("correct horse battery staple")


@pytest.fixture
def file_ca(tmp_path: Path) -> CA:
    return CA.init(tmp_path / "ca", passphrase=PASS, trust_domain="bastion.internal")


@pytest.fixture
def hsm_ca(tmp_path: Path, hsm_session: HsmSession) -> CA:
    """A CA whose key is a fresh key pair on the test token (a new label per test)."""
    label = f"ca-{uuid.uuid4().hex[:8]}"
    assert hsm_session.ensure_ec_keypair(label)
    return CA.init(
        tmp_path / "ca",
        signer=HsmCASigner(hsm_session, label),
        key_meta={"type": "hsm", "label": label, "token": hsm_session.config.token_label},
    )


def _crl(ca: CA) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl(ca.crl_path.read_bytes())


@pytest.mark.parametrize("where", ["file", "hsm"])
def test_issue_verify_revoke_crl(request: pytest.FixtureRequest, where: str) -> None:
    """A client and a server certificate verify against the CA certificate; a revocation
    appears in a CRL whose signature verifies under the CA key, wherever that key lives."""
    ca: CA = request.getfixturevalue(f"{where}_ca")
    client = ca.issue_client(["spiffe://bastion.internal/svc/billing"])
    server = ca.issue_server(["gateway.internal", "127.0.0.1"])
    for issued in (client, server):
        issued.certificate.verify_directly_issued_by(ca.certificate)
    eku = client.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = client.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://bastion.internal/svc/billing"
    ]
    ca.revoke(client.serial_hex, reason="key_compromise")
    crl = _crl(ca)
    assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
    entry = crl.get_revoked_certificate_by_serial_number(client.certificate.serial_number)
    assert entry is not None
    assert crl.get_revoked_certificate_by_serial_number(server.certificate.serial_number) is None
    assert [r["serial"] for r in ca.revoked()] == [client.serial_hex]


def test_hsm_ca_key_never_leaves_the_token(hsm_ca: CA, hsm_session: HsmSession) -> None:
    """With the key in the HSM, the CA directory holds no private key and the token's key is
    sensitive and non-extractable."""
    label = hsm_ca.key_meta["label"]
    assert hsm_ca.key_meta["type"] == "hsm"
    for path in hsm_ca.directory.rglob("*"):
        if path.is_file():
            assert b"PRIVATE KEY" not in path.read_bytes(), path.name
    private = hsm_session._require(ObjectClass.PRIVATE_KEY, KeyType.EC, label)
    attrs = private.get_attributes([Attribute.SENSITIVE, Attribute.EXTRACTABLE])
    assert attrs[Attribute.SENSITIVE] is True
    assert attrs[Attribute.EXTRACTABLE] is False


def test_hsm_ca_cannot_sign_without_the_token(hsm_ca: CA) -> None:
    """Opened without an HSM session, an HSM CA reads but refuses to sign, naming the HSM."""
    ca = CA.open(hsm_ca.directory, passphrase=PASS)
    with pytest.raises(PassphraseError, match="log in to the HSM"):
        ca.issue_client(["spiffe://bastion.internal/svc/x"])


def test_wrong_token_key_is_refused(hsm_ca: CA, softhsm: SoftHsm) -> None:
    """The same label on another token is other key material: opening the CA with it fails."""
    other = softhsm.other_config
    with HsmSession(other) as session:
        session.ensure_ec_keypair(hsm_ca.key_meta["label"])
        with pytest.raises(PassphraseError, match="does not belong to the CA certificate"):
            CA.open(hsm_ca.directory, hsm=session)


@pytest.mark.parametrize("where", ["file", "hsm"])
def test_rotation_keeps_earlier_certificates_valid(
    request: pytest.FixtureRequest, hsm_session: HsmSession, where: str
) -> None:
    """After rotation: a new key and CA certificate (same name, new key id), new certificates
    verify under it, earlier ones under the previous certificate kept in the bundle, and the
    CRL (signed by the new key) still revokes an earlier certificate by serial."""
    ca: CA = request.getfixturevalue(f"{where}_ca")
    before = ca.issue_client(["spiffe://bastion.internal/svc/old"])
    old_cert = ca.certificate
    old_key = ca.key_meta
    if where == "hsm":
        rotated = ca.rotate(hsm=hsm_session)
        assert rotated.key_meta["type"] == "hsm"
        assert rotated.key_meta["label"] != old_key["label"]  # ca.json names the new key
        assert not (ca.directory / "ca.key").exists()
    else:
        rotated = ca.rotate(passphrase=Secret("another long passphrase"))
    assert rotated.certificate.subject == old_cert.subject
    assert rotated.certificate.public_key() != old_cert.public_key()
    after = rotated.issue_client(["spiffe://bastion.internal/svc/new"])
    after.certificate.verify_directly_issued_by(rotated.certificate)
    before.certificate.verify_directly_issued_by(old_cert)
    bundle = x509.load_pem_x509_certificates((ca.directory / "ca-bundle.pem").read_bytes())
    assert [c.serial_number for c in bundle] == [
        rotated.certificate.serial_number,
        old_cert.serial_number,
    ]
    rotated.revoke(before.serial_hex)
    crl = _crl(rotated)
    assert crl.is_signature_valid(rotated.certificate.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(before.certificate.serial_number)
    reopened = CA.open(
        ca.directory,
        **(
            {"hsm": hsm_session}
            if where == "hsm"
            else {"passphrase": Secret("another long passphrase")}
        ),
    )
    reopened.issue_server(["gw.internal"]).certificate.verify_directly_issued_by(
        rotated.certificate
    )
    meta = json.loads((ca.directory / "ca.json").read_text())
    assert meta["previous"][0]["serial"] == format(old_cert.serial_number, "x")


@pytest.mark.parametrize(
    ("action", "error", "match"),
    [
        (lambda ca: ca.issue_client([]), IssueError, "exactly one SPIFFE ID"),
        (
            lambda ca: ca.issue_client(["spiffe://other.domain/svc/x"]),
            IssueError,
            "trust domain 'other.domain'",
        ),
        (lambda ca: ca.issue_client(["https://bastion.internal/x"]), IssueError, "spiffe"),
        (lambda ca: ca.issue_server([]), IssueError, "at least one DNS name"),
        (lambda ca: ca.issue_server(["bad name!"]), IssueError, "neither a DNS name"),
        (
            lambda ca: ca.issue_client(
                ["spiffe://bastion.internal/svc/x"], lifetime=dt.timedelta(days=400)
            ),
            IssueError,
            "lifetime must be between",
        ),
        (lambda ca: ca.revoke("zz"), IssueError, "not a hexadecimal number"),
        (lambda ca: ca.revoke("abc123"), IssueError, "was not issued by this CA"),
        (lambda ca: ca.revoke(_issued(ca), reason="bored"), IssueError, "reason 'bored'"),
        (lambda ca: ca.rotate(), PassphraseError, "at least 12 characters"),
    ],
    ids=[
        "no-spiffe-id",
        "foreign-trust-domain",
        "not-spiffe",
        "server-no-san",
        "server-bad-san",
        "lifetime-too-long",
        "serial-not-hex",
        "serial-unknown",
        "reason-unknown",
        "rotate-no-passphrase",
    ],
)
def test_errors_name_the_problem(file_ca: CA, action: object, error: type, match: str) -> None:
    """Each refusal raises the PKI error for it with a message naming the value and the fix."""
    with pytest.raises(error, match=match):
        action(file_ca)  # type: ignore[operator]


def _issued(ca: CA) -> str:
    return ca.issue_client(["spiffe://bastion.internal/svc/r"]).serial_hex


def test_revoking_twice_is_refused(file_ca: CA) -> None:
    """A second revocation of the same serial is refused, the CRL keeps one entry."""
    serial = _issued(file_ca)
    file_ca.revoke(serial)
    with pytest.raises(IssueError, match="already revoked"):
        file_ca.revoke(serial)
    assert len(list(_crl(file_ca))) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"passphrase": Secret("short")}, PassphraseError, "at least 12"),
        ({"passphrase": PASS, "trust_domain": "Bad Domain"}, IssueError, "trust domain"),
        ({}, PassphraseError, "needs a passphrase"),
    ],
    ids=["short-passphrase", "bad-trust-domain", "no-key"],
)
def test_init_refusals(tmp_path: Path, kwargs: dict[str, object], error: type, match: str) -> None:
    """init refuses weak passphrases, malformed trust domains and a CA without a key."""
    with pytest.raises(error, match=match):
        CA.init(tmp_path / "ca", **kwargs)  # type: ignore[arg-type]


def test_init_refuses_an_existing_ca_and_open_a_missing_one(file_ca: CA, tmp_path: Path) -> None:
    """A directory holding a CA is never overwritten; opening an empty one says to init."""
    with pytest.raises(IssueError, match="already holds a CA"):
        CA.init(file_ca.directory, passphrase=PASS)
    with pytest.raises(CANotFoundError, match="bastion pki init"):
        CA.open(tmp_path / "nothing")


def test_wrong_passphrase_and_read_only_open(file_ca: CA) -> None:
    """A wrong passphrase is refused; opened without one the CA lists but cannot sign."""
    with pytest.raises(PassphraseError, match="passphrase is wrong"):
        CA.open(file_ca.directory, passphrase=Secret("wrong passphrase!!"))
    reader = CA.open(file_ca.directory)
    with pytest.raises(PassphraseError, match="give the CA passphrase"):
        reader.write_crl()


@pytest.mark.parametrize(
    ("text", "ok"),
    [("24h", True), ("7d", True), ("30m", True), ("0d", False), ("7 days", False)],
    ids=["hours", "days", "minutes", "zero", "words"],
)
def test_parse_lifetime(text: str, ok: bool) -> None:
    """Lifetimes are <n>m|h|d and positive."""
    if ok:
        assert parse_lifetime(text) > dt.timedelta(0)
    else:
        with pytest.raises(IssueError):
            parse_lifetime(text)


def test_cli_init_issue_revoke_rotate_through_softhsm(
    tmp_path: Path,
    softhsm: SoftHsm,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`bastion pki init --hsm`, issue, revoke, crl and rotate all sign on the token; the CA
    directory never holds a private key."""
    for name, value in softhsm.token.env().items():
        monkeypatch.setenv(name, value)
    ca_dir = tmp_path / "ca"
    label = f"cli-ca-{uuid.uuid4().hex[:8]}"
    assert main(["pki", "init", "--dir", str(ca_dir), "--hsm", "--key-label", label]) == 0
    assert "non-extractable" in capsys.readouterr().out
    out = tmp_path / "svc"
    argv = ["pki", "issue", "client", "--dir", str(ca_dir), "--out", str(out)]
    assert main([*argv, "--spiffe-id", "spiffe://bastion.internal/svc/cli"]) == 0
    cert = x509.load_pem_x509_certificate(out.with_suffix(".crt").read_bytes())
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca_cert)
    assert (
        main(["pki", "revoke", "--dir", str(ca_dir), "--cert", str(out.with_suffix(".crt"))]) == 0
    )
    assert main(["pki", "rotate", "--dir", str(ca_dir)]) == 0
    assert main(["pki", "crl", "--dir", str(ca_dir)]) == 0
    new_ca = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    assert crl.is_signature_valid(new_ca.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    for path in ca_dir.rglob("*"):
        if path.is_file():
            assert b"PRIVATE KEY" not in path.read_bytes(), path.name
