"""Fixtures for the audit tests: a file signing key, a trail config and a trail factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.audit import AuditConfig, GroupCommitTrail, open_audit_trail
from pki.signing import FileSigner


@pytest.fixture
def signer(tmp_path: Path) -> FileSigner:
    return FileSigner.generate(tmp_path / "keys" / "audit.pem", key_id="audit")


@pytest.fixture
def sqlite_config(tmp_path: Path) -> AuditConfig:
    return AuditConfig(backend="sqlite", path=tmp_path / "audit.db", checkpoint_interval_s=3600)


@pytest.fixture
async def open_trail(
    signer: FileSigner,
) -> AsyncIterator[Callable[..., GroupCommitTrail]]:
    """Opens trails (``open_trail(config, **overrides)``) and closes any left open."""
    opened: list[GroupCommitTrail] = []

    def factory(config: AuditConfig, **overrides: Any) -> GroupCommitTrail:
        if overrides:
            config = config.model_copy(update=overrides)
        trail = open_audit_trail(config, signer)
        assert isinstance(trail, GroupCommitTrail)
        opened.append(trail)
        return trail

    yield factory
    for trail in opened:
        await trail.close()
