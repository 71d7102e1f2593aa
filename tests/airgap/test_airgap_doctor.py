"""``bastion doctor``: one line per check against a real config, exit 1 when any check fails."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from ruamel.yaml import YAML

from gateway.cli import main
from tests.airgap._support import REPO, write_gateway_config
from tests.fixtures.pki import TestPKI
from tests.fixtures.softhsm import SoftHsm


def _config(tmp_path: Path, pki: TestPKI, **changes: Any) -> Path:
    path = write_gateway_config(tmp_path / "site", pki, REPO / "policies" / "default.yaml")
    yaml = YAML()
    data = yaml.load(path)
    for section, values in changes.items():
        data[section] = {**data.get(section, {}), **values}
    yaml.dump(data, path)
    return path


def _doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["doctor", *args])
    return code, capsys.readouterr().out


def test_doctor_passes_a_sound_installation(
    test_pki: TestPKI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A valid config gets an ok line per check (certificates, CRL, policy, audit) and exit 0."""
    code, out = _doctor(
        capsys, "--config", str(_config(tmp_path, test_pki)), "--policies", str(REPO / "policies")
    )
    assert code == 0, out
    for name in ("python", "packages", "tls server", "tls crl", "policy", "audit store"):
        assert f"ok    {name}:" in out
    assert "FAIL" not in out


def _swap_key(pki: TestPKI) -> dict[str, Any]:
    return {"tls": {"key": str(pki.gateway_client.key)}}


def _foreign_issuer(pki: TestPKI) -> dict[str, Any]:
    pair = pki.custom(
        "foreign",
        sans=[x509.DNSName("localhost")],
        signer_key=ec.generate_private_key(ec.SECP256R1()),
    )
    return {"tls": {"cert": str(pair.cert), "key": str(pair.key)}}


def _expired(pki: TestPKI) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    pair = pki.custom(
        "expired",
        sans=[x509.DNSName("localhost")],
        not_before=now - dt.timedelta(days=10),
        not_after=now - dt.timedelta(days=1),
    )
    return {"tls": {"cert": str(pair.cert), "key": str(pair.key)}}


def _unwritable_audit(_pki: TestPKI) -> dict[str, Any]:
    return {"audit": {"path": "/proc/bastion-doctor/audit.db"}}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (_swap_key, "is not the private key of"),
        (_foreign_issuer, "is not signed by the CA"),
        (_expired, "not now; issue a new one"),
        (_unwritable_audit, "FAIL  audit store: cannot write in /proc/bastion-doctor"),
    ],
    ids=["key-mismatch", "foreign-issuer", "expired", "audit-unwritable"],
)
def test_doctor_names_each_failure_and_exits_1(
    change: Any, words: str, test_pki: TestPKI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A key that is not the certificate's, a certificate from another issuer or out of date, or
    an audit directory that cannot be written: a FAIL line naming it, the other checks still run."""
    code, out = _doctor(capsys, "--config", str(_config(tmp_path, test_pki, **change(test_pki))))
    assert code == 1
    assert words in out
    assert "ok    policy:" in out


@pytest.mark.hsm
def test_doctor_reaches_the_hsm(
    softhsm: SoftHsm, test_pki: TestPKI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With an 'hsm:' section the doctor logs in to the token and finds Bastion's keys."""
    hsm = {"module": str(softhsm.token.module), "token": softhsm.token.token_label}
    hsm["pin_file"] = str(softhsm.token.pin_file)
    code, out = _doctor(capsys, "--config", str(_config(tmp_path, test_pki, hsm=hsm)))
    assert code == 0, out
    assert "ok    hsm: token 'bastion-test'" in out
