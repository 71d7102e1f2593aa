"""Crash safety of the write-ahead audit: SIGKILL the gateway under load, restart, verify."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import pytest
from ruamel.yaml import YAML

from gateway.audit import AuditConfig, open_store
from tests.audit.helpers import assert_trail_verifies
from tests.fixtures.pki import CertPair, TestPKI
from tests.fixtures.upstream import RecordingUpstream
from tests.gateway.conftest import gateway_config

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(config: Path, ops_port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"http://127.0.0.1:{ops_port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx2.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("the gateway did not start")


@pytest.mark.slow
def test_sigkill_under_load_loses_no_acknowledged_decision(
    test_pki: TestPKI, billing: CertPair, recording_upstream: RecordingUpstream, tmp_path: Path
) -> None:
    """Every decision id a client received before a SIGKILL is in the trail after restart, and
    the trail verifies."""
    port, ops_port = _free_port(), _free_port()
    key = tmp_path / "digest.key"
    key.write_text("d" * 48)
    audit = {"backend": "sqlite", "path": str(tmp_path / "audit.db"), "digest_key_file": str(key)}
    config = gateway_config(
        test_pki,
        recording_upstream.url,
        server={"host": "127.0.0.1", "port": port, "ops_port": ops_port, "access_log": False},
        audit=audit,
        signing={"key_file": str(tmp_path / "signing.key")},
    )
    path = tmp_path / "gateway.yaml"
    with path.open("w") as handle:
        YAML().dump(config, handle)

    process = _start(path, ops_port)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    context = test_pki.ca_cert

    def client_loop() -> None:
        from pki.tls import client_context

        ctx = client_context(ca=context, cert=billing.cert, key=billing.key)
        with httpx2.Client(base_url=f"https://127.0.0.1:{port}", verify=ctx, timeout=5) as client:
            for _ in range(400):  # bounded; the kill ends it sooner
                if stop.is_set():
                    return
                try:
                    response = client.post(
                        "/v1/chat/completions",
                        json={
                            "model": "chat-default",
                            "messages": [{"role": "user", "content": "load"}],
                        },
                    )
                except httpx2.HTTPError:
                    return
                if response.status_code == 200:
                    with lock:
                        acknowledged.append(response.headers["x-bastion-decision-id"])

    threads = [threading.Thread(target=client_loop) for _ in range(8)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(acknowledged) < 100:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert len(acknowledged) >= 100

    restarted = _start(path, ops_port)  # reopens the trail and continues the chain
    restarted.send_signal(signal.SIGTERM)  # graceful: signs a checkpoint on close
    assert restarted.wait(30) == 0

    store = open_store(AuditConfig.model_validate(audit))
    try:
        ids = {record.record_id for record in store.records()}
    finally:
        store.close()
    missing = [decision_id for decision_id in acknowledged if decision_id not in ids]
    assert missing == []
    assert_trail_verifies(tmp_path / "audit.db")
