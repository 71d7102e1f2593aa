"""Revocation across a CA key rotation (``pki/crl.py``): a checker over ``ca-bundle.pem`` keeps
answering (and still revokes) after the CRL is re-signed by the new key; one pinned to the old
certificate alone fails closed; a CRL from another CA is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pki.ca import CA
from pki.crl import RevocationChecker, load_crl
from pki.errors import CRLError
from pki.secret import Secret

PASS = Secret("correct horse battery staple")
NEW_PASS = Secret("another long passphrase")


def _touch(path: Path) -> None:
    """Move the CRL's mtime on, so the change is seen even on a coarse filesystem clock."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_bundle_checker_survives_rotation_and_still_revokes(tmp_path: Path) -> None:
    """Built before the rotation from ca-bundle.pem (one certificate then), the checker accepts
    the CRL the new key signs, and a certificate issued before the rotation can still be
    revoked by serial."""
    ca = CA.init(tmp_path / "ca", passphrase=PASS)
    before = ca.issue_client(["spiffe://bastion.internal/svc/old"])
    checker = RevocationChecker.from_ca_file(ca.crl_path, ca.directory / "ca-bundle.pem")
    pinned_old = RevocationChecker(ca.crl_path, ca.certificate)  # no bundle to re-read
    assert checker.check(before.certificate.serial_number) is None
    rotated = ca.rotate(passphrase=NEW_PASS)
    _touch(rotated.crl_path)
    assert checker.check(before.certificate.serial_number) is None
    assert pinned_old.check(before.certificate.serial_number) == (
        "revocation status unknown (CRL "
        f"{ca.crl_path} is not signed by the CA {ca.certificate.subject.rfc4514_string()})"
    )
    rotated.revoke(before.serial_hex)
    _touch(rotated.crl_path)
    assert checker.check(before.certificate.serial_number) == "certificate revoked"
    after = rotated.issue_client(["spiffe://bastion.internal/svc/new"])
    assert checker.check(after.certificate.serial_number) is None


@pytest.mark.parametrize(
    "what", ["crl-of-another-ca", "bundle-missing"], ids=["other-ca", "no-bundle"]
)
def test_refusals(tmp_path: Path, what: str) -> None:
    """A CRL signed by an unrelated CA, or a CA file that cannot be read, is a CRLError (the
    gateway then refuses every client: fail closed)."""
    ours = CA.init(tmp_path / "ours", passphrase=PASS)
    theirs = CA.init(tmp_path / "theirs", passphrase=PASS)
    if what == "crl-of-another-ca":
        with pytest.raises(CRLError, match="is not signed by the CA"):
            load_crl(theirs.crl_path, ours.certificate)
    else:
        with pytest.raises(CRLError, match="cannot be read as PEM certificates"):
            RevocationChecker.from_ca_file(ours.crl_path, tmp_path / "missing.pem")
