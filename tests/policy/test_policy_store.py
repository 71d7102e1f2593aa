"""PolicyStore: hot reload on change and SIGHUP, bad files refused, no policy → deny, shadow."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MappingProxyType

import pytest
from prometheus_client import CollectorRegistry

from gateway.detect.findings import Finding
from gateway.policy import Action, PolicyStore, RequestFacts
from tests.policy._policies import BASE

BAD = BASE.replace("kind: managed", "kind: cloud")
WAIT_S = 10.0


def _wait_for(condition: Callable[[], bool]) -> bool:
    """Poll ``condition`` until it holds or WAIT_S passes (bounded; never a timing assert)."""
    done = threading.Event()
    for _ in range(int(WAIT_S / 0.02)):
        if condition():
            return True
        done.wait(0.02)
    return condition()


def _rewrite(path: Path, text: str) -> None:
    """Write ``text`` and move the mtime a second on, so the change is seen even when the
    filesystem clock ticks coarser than the test writes."""
    before = path.stat().st_mtime_ns
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(BASE, encoding="utf-8")
    return path


@pytest.fixture
def store(policy_file: Path) -> Iterator[PolicyStore]:
    s = PolicyStore(policy_file, poll_interval=0.02, registry=CollectorRegistry())
    yield s
    s.stop()


def _facts(*entities: str) -> RequestFacts:
    return RequestFacts(
        identity="spiffe://corp.test/support/bot",
        model="gpt-4o-mini",
        endpoint="/v1/chat/completions",
        findings=tuple(Finding(e, 0.9, "messages[0].content", 0, 3, "t") for e in entities),
        headers=MappingProxyType({}),
    )


def test_change_on_disk_is_picked_up(store: PolicyStore, policy_file: Path) -> None:
    """A changed file becomes the live policy without a restart."""
    store.start()
    first = store.current()
    assert first is not None
    _rewrite(policy_file, BASE.replace("threshold: 0.5", "threshold: 0.7"))
    assert _wait_for(lambda: (p := store.current()) is not None and p.threshold == 0.7)


def test_bad_file_keeps_last_good(
    store: PolicyStore, policy_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken new file is refused, its error logged with file:line:col; the old policy stays."""
    store.start()
    good = store.current()
    assert good is not None
    with caplog.at_level(logging.ERROR, logger="gateway.policy.store"):
        _rewrite(policy_file, BAD)
        assert _wait_for(lambda: store.last_error is not None)
    assert store.current() is good
    assert f"{policy_file}:13:11: error: routes.openai.kind" in (store.last_error or "")
    assert f"keeping {good.version}" in caplog.text
    assert f"{policy_file}:13:11" in caplog.text
    # A fixed file is accepted again.
    _rewrite(policy_file, BASE.replace("threshold: 0.5", "threshold: 0.6"))
    assert _wait_for(lambda: store.last_error is None)
    current = store.current()
    assert current is not None
    assert current.threshold == 0.6


def test_never_loaded_is_none_and_denies(tmp_path: Path) -> None:
    """With no good policy ever loaded, current() is None and every decision is deny."""
    (tmp_path / "policy.yaml").write_text(BAD, encoding="utf-8")
    store = PolicyStore(tmp_path / "policy.yaml", registry=CollectorRegistry())
    assert store.reload() is False
    assert store.current() is None
    assert store.last_error is not None
    d = store.decide(_facts())
    assert (d.action, d.route, d.policy_version) == (Action.DENY, None, "none")


def test_missing_file_is_none(tmp_path: Path) -> None:
    """A policy path that does not exist leaves the store empty and says why."""
    store = PolicyStore(tmp_path / "absent.yaml", registry=CollectorRegistry())
    store.reload()
    assert store.current() is None
    assert "cannot read the file" in (store.last_error or "")


def test_sighup_forces_reload(policy_file: Path) -> None:
    """SIGHUP reloads even when the file's mtime and size did not change."""
    store = PolicyStore(policy_file, poll_interval=3600, registry=CollectorRegistry())
    before_handler = signal.getsignal(signal.SIGHUP)
    store.install_sighup()
    try:
        assert (p := store.current()) is not None
        assert p.threshold == 0.5
        st = policy_file.stat()
        policy_file.write_text(BASE.replace("threshold: 0.5", "threshold: 0.9"), encoding="utf-8")
        os.utime(policy_file, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert store.reload() is False  # same stamp: a plain poll sees nothing new
        os.kill(os.getpid(), signal.SIGHUP)
        assert _wait_for(lambda: (p := store.current()) is not None and p.threshold == 0.9)
    finally:
        store.stop()
    assert signal.getsignal(signal.SIGHUP) == before_handler


def test_shadow_differences_are_counted(tmp_path: Path, policy_file: Path) -> None:
    """The shadow policy is decided beside the live one; differences count by rule pair."""
    shadow_file = tmp_path / "shadow.yaml"
    managed = "      route: openai\n      sanitize:\n        PERSON: pseudonymize\n"
    managed += "        LOCATION: redact\n"
    shadow_file.write_text(BASE.replace(managed, "      route: onprem\n"), encoding="utf-8")
    registry = CollectorRegistry()
    store = PolicyStore(policy_file, shadow_path=shadow_file, registry=registry)
    store.reload()
    assert store.shadow() is not None
    live, shadow = store.shadow_compare(_facts("PERSON"))
    assert shadow is not None
    assert (live.action, shadow.action) == (Action.MANAGED, Action.ONPREM)
    store.shadow_compare(_facts("PERSON"))
    store.shadow_compare(_facts())  # same decision: not counted
    labels = {"live_rule": "names-managed", "shadow_rule": "names-managed"}
    assert registry.get_sample_value("bastion_policy_shadow_differences_total", labels) == 2
    assert (
        registry.get_sample_value(
            "bastion_policy_shadow_differences_total",
            {"live_rule": "default", "shadow_rule": "default"},
        )
        is None
    )


def test_without_shadow_compare_returns_live_only(store: PolicyStore) -> None:
    """Without a shadow policy, shadow_compare returns the live decision and None."""
    store.reload()
    live, shadow = store.shadow_compare(_facts())
    assert shadow is None
    assert live.action is Action.MANAGED
