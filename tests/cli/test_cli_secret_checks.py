"""`bastion serve --check` and `bastion doctor` look up every secret the config names before
`serve` needs it: the secret store is opened and each `secret:NAME` decrypted in a real SoftHSM2
token, files and variables are read; each reference is reported found or not, never its value."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from gateway.cli import main
from gateway.secrets import HsmSecretStore
from pki.hsm import HsmSession
from pki.secret import Secret
from tests.airgap._support import REPO, write_gateway_config
from tests.fixtures.pki import TestPKI
from tests.fixtures.softhsm import SoftHsm

pytestmark = pytest.mark.hsm

VALUE = "sk-live-3c1f0a9e8d7c6b5a4f3e2d1c0b9a8f7e"
ENV_VALUE = "sk-env-0f1e2d3c4b5a69788796a5b4c3d2e1f0"


@pytest.fixture
def site(tmp_path: Path, test_pki: TestPKI, softhsm: SoftHsm) -> Callable[..., Path]:
    """A gateway config with an HSM section and a secret store holding `openai`; the returned
    function sets the managed upstream's api_key (and any other section) and writes it."""
    store_file = tmp_path / "secrets.enc.json"
    with HsmSession(softhsm.config) as session:
        HsmSecretStore(store_file, session).put("openai", Secret(VALUE))
    path = write_gateway_config(tmp_path / "site", test_pki, REPO / "policies" / "default.yaml")
    hsm = {
        "module": str(softhsm.token.module),
        "token": softhsm.token.token_label,
        "pin_file": str(softhsm.token.pin_file),
    }

    def write(api_key: Any, **sections: Any) -> Path:
        yaml = YAML()
        data = yaml.load(path)
        data["upstreams"]["openai"]["api_key"] = api_key
        data["hsm"] = hsm
        data["secrets"] = {"file": str(store_file)}
        for name, value in sections.items():
            if value is None:
                del data[name]
            else:
                data[name] = value
        yaml.dump(data, path)
        return path

    return write


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert VALUE not in out
    assert ENV_VALUE not in out
    return code, out


REFERENCES = [
    ("stored", "secret:openai", {}, 0, "upstreams.openai.api_key secret:openai: found"),
    (
        "missing-name",
        "secret:nosuchname",
        {},
        1,
        "upstreams.openai.api_key secret:nosuchname: NOT FOUND: no secret named 'nosuchname'",
    ),
    (
        "no-store",
        "secret:openai",
        {"secrets": None},
        1,
        "secret:openai: NOT FOUND: the secret store cannot be opened",
    ),
    ("env-set", {"env": "BASTION_TEST_KEY"}, {}, 0, "env:BASTION_TEST_KEY: found"),
    (
        "env-unset",
        {"env": "BASTION_TEST_UNSET"},
        {},
        1,
        "env:BASTION_TEST_UNSET: NOT FOUND: environment variable BASTION_TEST_UNSET is not set",
    ),
    ("file-missing", {"file": "nowhere.key"}, {}, 1, "nowhere.key: NOT FOUND: cannot read"),
]


@pytest.mark.parametrize(
    ("api_key", "sections", "code", "line"),
    [case[1:] for case in REFERENCES],
    ids=[case[0] for case in REFERENCES],
)
def test_serve_check_looks_up_each_reference(
    site: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    api_key: Any,
    sections: dict[str, Any],
    code: int,
    line: str,
) -> None:
    """serve --check says per reference found or NOT FOUND with the reason, and exits 1 when
    any is missing; the HSM PIN and the digest key are references too."""
    monkeypatch.setenv("BASTION_TEST_KEY", ENV_VALUE)
    monkeypatch.delenv("BASTION_TEST_UNSET", raising=False)
    got, out = _run(capsys, "serve", "--config", str(site(api_key, **sections)), "--check")
    assert (got, line in out) == (code, True), out
    assert "hsm.pin file:" in out
    assert "audit.digest_key file:" in out
    assert out.rstrip().endswith(": OK" if code == 0 else "problem)")


def test_serve_check_logs_in_to_the_hsm(
    site: Callable[..., Path], capsys: pytest.CaptureFixture[str], softhsm: SoftHsm
) -> None:
    """serve --check logs in to the configured token and finds Bastion's keys on it."""
    code, out = _run(capsys, "serve", "--config", str(site("secret:openai")), "--check")
    assert code == 0, out
    assert f"hsm: token '{softhsm.token.token_label}'" in out


def test_serve_check_fails_on_a_wrong_pin(
    site: Callable[..., Path], capsys: pytest.CaptureFixture[str], tmp_path: Path, softhsm: SoftHsm
) -> None:
    """A PIN the token refuses fails the check (both the HSM line and the stored secret)."""
    wrong = tmp_path / "wrong.pin"
    wrong.write_text("000000\n")
    hsm = {"module": str(softhsm.token.module), "token": softhsm.token.token_label}
    hsm["pin_file"] = str(wrong)
    code, out = _run(capsys, "serve", "--config", str(site("secret:openai", hsm=hsm)), "--check")
    assert code == 1
    assert "hsm: FAILED:" in out
    assert "secret:openai: NOT FOUND" in out


def test_doctor_fails_on_a_missing_secret(
    site: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """doctor fails (exit 1) on a config naming secret:nosuchname, with a FAIL line naming the
    key and the reference; the stored one it finds."""
    code, out = _run(capsys, "doctor", "--config", str(site("secret:nosuchname")))
    assert code == 1, out
    assert "FAIL  secret upstreams.openai.api_key: secret:nosuchname: no secret named" in out
    assert "ok    secret hsm.pin:" in out
    code, out = _run(capsys, "doctor", "--config", str(site("secret:openai")))
    assert code == 0, out
    assert "ok    secret upstreams.openai.api_key: secret:openai found" in out
