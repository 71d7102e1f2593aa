"""``bastion hsm``, ``bastion secrets`` and ``bastion model`` as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from tests.fixtures.softhsm import SoftHsm

pytestmark = pytest.mark.hsm


def _bastion(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main())", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_dev_init_status_and_secrets(tmp_path: Path, softhsm: SoftHsm) -> None:
    """hsm init --dir prints working env lines; status, secrets put (stdin) and list use them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BASTION_", "SOFTHSM2_"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    init = _bastion("hsm", "init", "--dir", str(tmp_path / "hsm"), env=env)
    assert init.returncode == 0, init.stderr
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in init.stdout.splitlines()
        if line.startswith("export ")
    )
    assert set(exports) == {
        "SOFTHSM2_CONF",
        "BASTION_HSM_MODULE",
        "BASTION_HSM_TOKEN",
        "BASTION_HSM_PIN_FILE",
    }
    pin_file = Path(exports["BASTION_HSM_PIN_FILE"])
    assert pin_file.stat().st_mode & 0o777 == 0o600
    assert pin_file.read_text().strip() not in init.stdout
    env |= exports

    status = _bastion("hsm", "status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    keys = {k["role"]: k for k in json.loads(status.stdout)["keys"]}
    assert keys["kek"]["present"]
    assert keys["kek"]["extractable"] is False

    store = str(tmp_path / "secrets.enc.json")
    put = _bastion("secrets", "put", "openai", "--store", store, env=env, stdin="sk-cli-value\n")
    assert put.returncode == 0, put.stderr
    listing = _bastion("secrets", "list", "--store", store, env=env)
    assert listing.stdout.split() == ["openai"]
    assert "sk-cli-value" not in put.stdout + put.stderr + Path(store).read_text()

    wrong = _bastion("hsm", "status", env=env | {"BASTION_HSM_PIN_FILE": str(pin_file) + "x"})
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("bastion: error: cannot read the HSM PIN")


def test_encrypt_and_inspect_commands(
    tiny_model_dir: Path,
    softhsm: SoftHsm,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """model encrypt --json reports the artifact; model inspect shows the same header facts."""
    for name, value in softhsm.token.env().items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "tiny.bmdl"
    assert main(["model", "encrypt", str(tiny_model_dir), "--out", str(out), "--json"]) == 0
    encrypted = json.loads(capsys.readouterr().out)
    assert encrypted["model_id"] == tiny_model_dir.name
    assert main(["model", "inspect", str(out), "--json"]) == 0
    inspected = json.loads(capsys.readouterr().out)
    assert inspected == {k: v for k, v in encrypted.items() if k != "path"}
    assert main(["model", "inspect", str(tiny_model_dir / "config.json")]) == 1
    assert "not a Bastion model artifact" in capsys.readouterr().err
