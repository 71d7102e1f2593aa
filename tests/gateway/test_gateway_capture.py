"""Opt-in payload capture: encrypted under an HSM-wrapped key, readable only through the HSM."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.cli import main as bastion
from tests.fixtures.pki import CertPair
from tests.gateway.conftest import RunningGateway

SECRET_PROMPT = "Patient MRN 4417-2290 was seen for chest pain on Tuesday; summarize the visit."


@pytest.fixture
def capturing_gateway(
    start_gateway: Callable[..., RunningGateway], softhsm: object, tmp_path: Path
) -> RunningGateway:
    env = softhsm.token.env()  # type: ignore[attr-defined]
    key = tmp_path / "digest.key"
    key.write_text("c" * 48)
    return start_gateway(
        audit={
            "backend": "sqlite",
            "path": str(tmp_path / "audit.db"),
            "digest_key_file": str(key),
            "capture_payloads": True,
        },
        signing={"hsm": True},
        hsm={
            "module": env["BASTION_HSM_MODULE"],
            "token": env["BASTION_HSM_TOKEN"],
            "pin_file": env["BASTION_HSM_PIN_FILE"],
        },
    )


def test_captured_payload_is_encrypted_and_readable_through_the_hsm(
    capturing_gateway: RunningGateway,
    billing: CertPair,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The trail holds the request and answer only as ciphertext; `bastion audit payload`
    decrypts them with the HSM for e-discovery."""
    with capturing_gateway.client(billing) as client:
        response = client.post(
            "/v1/chat/completions",
            json={
                "model": "chat-default",
                "messages": [{"role": "user", "content": SECRET_PROMPT}],
            },
        )
    assert response.status_code == 200
    decision_id = response.headers["x-bastion-decision-id"]
    raw = b"".join(
        Path(f"{tmp_path / 'audit.db'}{suffix}").read_bytes()
        for suffix in ("", "-wal")
        if Path(f"{tmp_path / 'audit.db'}{suffix}").exists()
    )
    assert b"4417-2290" not in raw
    with sqlite3.connect(tmp_path / "audit.db") as db:
        kinds = {row[0] for row in db.execute("SELECT kind FROM audit_records")}
    assert {"decision", "capkey", "payload"} <= kinds

    assert (
        bastion(["audit", "payload", decision_id, "--config", str(capturing_gateway.config_path)])
        == 0
    )
    captured = json.loads(capsys.readouterr().out)
    assert captured["request"]["messages"][0]["content"] == SECRET_PROMPT
    assert captured["response"]["choices"][0]["message"]["content"] == SECRET_PROMPT


def test_payload_lookup_for_unknown_decision_is_a_clear_error(
    capturing_gateway: RunningGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    """Asking for a decision without captured payloads says so."""
    assert (
        bastion(
            [
                "audit",
                "payload",
                "dec_000000000000000000000000",
                "--config",
                str(capturing_gateway.config_path),
            ]
        )
        == 1
    )
    assert "no captured payload" in capsys.readouterr().err


def test_capture_without_hsm_is_refused_at_startup(
    start_gateway: Callable[..., RunningGateway], tmp_path: Path
) -> None:
    """capture_payloads without an hsm: section is a startup error, never plaintext capture."""
    from gateway.errors import ConfigError

    key = tmp_path / "digest.key"
    key.write_text("c" * 48)
    with pytest.raises(ConfigError, match="needs the HSM"):
        start_gateway(
            audit={
                "backend": "sqlite",
                "path": str(tmp_path / "a.db"),
                "digest_key_file": str(key),
                "capture_payloads": True,
            },
            signing={"key_file": str(tmp_path / "s.key")},
        )
