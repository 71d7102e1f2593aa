"""Key rotation: a trail signed first by one checkpoint key, then by another, stays verifiable
against both pinned keys (``--pubkey`` twice, or the configured signer plus
``audit.retired_public_keys``), and not against the new key alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.audit import AuditConfig, open_audit_trail
from gateway.audit._checkpoint import key_fingerprint
from gateway.cli import main
from pki.hsm import HsmSession, HsmSigner
from pki.signing import FileSigner
from tests.audit.helpers import sample_decision
from tests.fixtures.softhsm import SoftHsm


@pytest.fixture
def rotated(tmp_path: Path) -> tuple[Path, FileSigner, FileSigner]:
    """A trail: 3 records under key ``old`` (closed, checkpointed), then 3 under ``new``."""
    db = tmp_path / "trail.db"
    old = FileSigner.generate(tmp_path / "old.pem", key_id="old")
    new = FileSigner.generate(tmp_path / "new.pem", key_id="new")

    async def write(signer: FileSigner, start: int) -> None:
        trail = open_audit_trail(AuditConfig(path=db, checkpoint_interval_s=3600), signer)
        for i in range(start, start + 3):
            await trail.append_decision(sample_decision(i))
        await trail.close()

    asyncio.run(write(old, 0))
    asyncio.run(write(new, 3))
    (tmp_path / "old.pub").write_bytes(old.public_key_pem())
    (tmp_path / "new.pub").write_bytes(new.public_key_pem())
    return db, old, new


@pytest.mark.parametrize(
    ("keys", "code", "expected"),
    [
        (["old.pub", "new.pub"], 0, "OK"),
        (["new.pub"], 1, "signed by an unknown key"),
        (["old.pub"], 1, "signed by an unknown key"),
    ],
    ids=["both-keys", "new-key-only", "old-key-only"],
)
def test_rotated_trail_verifies_with_every_pinned_key(
    rotated: tuple[Path, FileSigner, FileSigner],
    capsys: pytest.CaptureFixture[str],
    keys: list[str],
    code: int,
    expected: str,
) -> None:
    """Checkpoints signed before the rotation verify under the old key, later ones under the
    new key; leaving either key out names the checkpoint it cannot check."""
    db = rotated[0]
    argv = ["audit", "verify", "--sqlite", str(db)]
    for name in keys:
        argv += ["--pubkey", str(db.parent / name)]
    assert main(argv) == code
    assert expected in capsys.readouterr().out


def test_config_pins_current_and_retired_signers(
    rotated: tuple[Path, FileSigner, FileSigner], capsys: pytest.CaptureFixture[str]
) -> None:
    """--config verifies against signing.key_file plus audit.retired_public_keys, and pubkey
    --config prints both keys, each with its fingerprint."""
    db, old, new = rotated
    config = db.parent / "bastion.yaml"
    config.write_text(
        "audit:\n  path: trail.db\n  retired_public_keys: [old.pub]\n"
        "signing:\n  key_file: new.pem\n"
    )
    assert main(["audit", "verify", "--config", str(config)]) == 0, capsys.readouterr().out
    capsys.readouterr()
    assert main(["audit", "pubkey", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.index(key_fingerprint(new.public_key_pem())) < out.index(
        key_fingerprint(old.public_key_pem())
    )
    assert "retired checkpoint signer" in out
    config.write_text("audit:\n  path: trail.db\nsigning:\n  key_file: new.pem\n")
    assert main(["audit", "verify", "--config", str(config)]) == 1
    assert "signed by an unknown key" in capsys.readouterr().out


def test_config_with_hsm_signer_pins_the_token_key(
    tmp_path: Path, softhsm: SoftHsm, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trail signed by the HSM's key verifies with --config (signing.hsm: true): the key is
    read from the token, not from the trail; pubkey --config prints the token key's
    fingerprint; a trail whose checkpoints another key signed is refused."""
    db = tmp_path / "trail.db"
    with HsmSession(softhsm.config) as session:
        signer = HsmSigner(session)

        async def write() -> None:
            trail = open_audit_trail(AuditConfig(path=db, checkpoint_interval_s=3600), signer)
            for i in range(3):
                await trail.append_decision(sample_decision(i))
            await trail.close()

        asyncio.run(write())
        token_pem = signer.public_key_pem()
    token = softhsm.token
    config = tmp_path / "bastion.yaml"
    config.write_text(
        f"audit:\n  path: trail.db\nsigning:\n  hsm: true\n"
        f"hsm:\n  module: {token.module}\n  token: {token.token_label}\n  pin_file: {token.pin_file}\n"
    )
    assert main(["audit", "verify", "--config", str(config)]) == 0, capsys.readouterr()
    assert f"checkpoint key (pinned): {key_fingerprint(token_pem)}" in capsys.readouterr().out
    assert main(["audit", "pubkey", "--config", str(config)]) == 0
    assert key_fingerprint(token_pem) in capsys.readouterr().out
    other = tmp_path / "other.db"
    other_signer = FileSigner.generate(tmp_path / "other.pem", key_id="other")

    async def write_other() -> None:
        trail = open_audit_trail(AuditConfig(path=other, checkpoint_interval_s=3600), other_signer)
        await trail.append_decision(sample_decision(9))
        await trail.close()

    asyncio.run(write_other())
    config.write_text(config.read_text().replace("path: trail.db", "path: other.db"))
    assert main(["audit", "verify", "--config", str(config)]) == 1
    assert "signed by an unknown key" in capsys.readouterr().out
