"""Root test configuration.

Shared fixtures live in ``tests/fixtures/<area>.py`` and are loaded as plugins below, each owned
by one area (pki/TLS and the recording upstream, SoftHSM2, PostgreSQL, ...).

``BASTION_FAST=1`` skips the heavy suites (markers ``model``, ``postgres``, ``slow``) for quick
local runs; CI (``CI=true``) always runs everything.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

pytest_plugins = [
    name
    for name in (
        "tests.fixtures.pki",
        "tests.fixtures.upstream",
        "tests.fixtures.bad_upstream",
        "tests.fixtures.softhsm",
        "tests.fixtures.postgres",
        "tests.fixtures.model",
    )
    if importlib.util.find_spec(name) is not None
]

_HEAVY = ("model", "postgres", "slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    fast = os.environ.get("BASTION_FAST") == "1" and os.environ.get("CI") != "true"
    if not fast:
        return
    skip = pytest.mark.skip(reason="heavy suite skipped by BASTION_FAST=1 (CI runs it)")
    for item in items:
        if any(item.get_closest_marker(m) for m in _HEAVY):
            item.add_marker(skip)
