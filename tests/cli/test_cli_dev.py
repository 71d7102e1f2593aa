"""The first run (`make run` = `bastion dev up`) stays inside the perimeter: without a managed
API key the site's managed route is off; a key in the environment or the site's secret store
turns it on. The gateway's start and stop lines are logged once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import pytest
from ruamel.yaml import YAML

from gateway.cli.dev import DEFAULT_POLICY, _configs, _managed_key, onprem_only_policy
from gateway.config import GatewayConfig, load_config
from gateway.detect.findings import Finding
from gateway.policy import Action, RequestFacts, decide, load_policy, load_policy_text
from gateway.secrets import HsmSecretStore
from pki.hsm import HsmSession
from pki.secret import Secret
from tests.fixtures.pki import TestPKI
from tests.fixtures.softhsm import SoftHsm

REPO = Path(__file__).resolve().parents[2]
FAKE_HSM_ENV = {
    "BASTION_HSM_MODULE": "/usr/lib/softhsm/libsofthsm2.so",
    "BASTION_HSM_TOKEN": "bastion-dev",
    "BASTION_HSM_PIN_FILE": "/nonexistent/user.pin",
}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}

# (id, entity found in the request, what the default policy does with it)
REQUESTS = [
    ("clean", None, Action.MANAGED),
    ("name", "PERSON", Action.MANAGED),
    ("ssn", "US_SSN", Action.ONPREM),
    ("email", "EMAIL_ADDRESS", Action.ONPREM),
    ("secret", "AWS_ACCESS_KEY", Action.DENY),
]


def _facts(entity: str | None) -> RequestFacts:
    findings = () if entity is None else (Finding(entity, 0.95, "messages[0].content", 0, 4, "t"),)
    return RequestFacts(
        identity="spiffe://bastion.internal/svc/demo",
        model="chat-default",
        endpoint="/v1/chat/completions",
        findings=findings,
    )


def _site(tmp_path: Path, managed_key: str | None) -> GatewayConfig:
    gateway_yaml, _worker = _configs(
        tmp_path, FAKE_HSM_ENV, tmp_path / "model.bastion", managed_key
    )
    return load_config(gateway_yaml)


@pytest.mark.parametrize(
    ("entity", "default_action"), [c[1:] for c in REQUESTS], ids=[c[0] for c in REQUESTS]
)
def test_without_a_key_every_request_stays_on_prem(
    tmp_path: Path, entity: str | None, default_action: Action
) -> None:
    """With no managed key the dev policy answers what the default policy sends to the managed
    API from the on-prem worker instead, and still denies what it denies."""
    config = _site(tmp_path, None)
    assert config.policy is not None
    policy = load_policy(config.policy.file)
    decision = decide(_facts(entity), policy)
    expected = Action.ONPREM if default_action is Action.MANAGED else default_action
    assert decision.action is expected
    assert decision.route in (None, "onprem")
    assert not decision.operations  # nothing to sanitize: nothing leaves
    assert decide(_facts(entity), load_policy(DEFAULT_POLICY)).action is default_action


def test_without_a_key_no_upstream_leaves_the_machine(tmp_path: Path) -> None:
    """The gateway config names no managed upstream, and every upstream URL is loopback, so no
    connection to a host outside the machine is ever attempted."""
    config = _site(tmp_path, None)
    assert {up.kind for up in config.upstreams.values()} == {"onprem"}
    hosts = {urlsplit(url).hostname for up in config.upstreams.values() for url in up.urls()}
    assert hosts <= LOOPBACK
    assert config.secrets is None


def test_an_openai_key_turns_the_managed_route_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OPENAI_API_KEY in the environment: the managed upstream uses it (by reference, never the
    value in the file) and the site runs the default policy."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-dev-0123456789")
    key = _managed_key(tmp_path, FAKE_HSM_ENV)
    assert key == "{env: OPENAI_API_KEY}"
    config = _site(tmp_path, key)
    assert config.policy is not None
    assert config.policy.file == DEFAULT_POLICY.resolve()
    managed = config.upstreams["openai"]
    assert managed.kind == "managed"
    assert managed.api_key is not None
    assert managed.api_key.env == "OPENAI_API_KEY"
    assert "sk-dev-0123456789" not in (tmp_path / "gateway.yaml").read_text()


@pytest.mark.hsm
def test_a_stored_secret_turns_the_managed_route_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, softhsm: SoftHsm
) -> None:
    """A secret `openai` in the site's store (no environment key) turns the managed route on,
    referenced as secret:openai with the site's store configured."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    hsm_env = softhsm.token.env()
    assert _managed_key(tmp_path, hsm_env) is None
    with HsmSession(softhsm.config) as session:
        HsmSecretStore(tmp_path / "secrets.enc.json", session).put("other", Secret("x" * 20))
    assert _managed_key(tmp_path, hsm_env) is None  # a store without `openai` changes nothing
    with HsmSession(softhsm.config) as session:
        HsmSecretStore(tmp_path / "secrets.enc.json", session).put("openai", Secret("sk-" * 8))
    key = _managed_key(tmp_path, hsm_env)
    assert key == '"secret:openai"'
    gateway_yaml, _ = _configs(tmp_path, hsm_env, tmp_path / "model.bastion", key)
    config = load_config(gateway_yaml)
    assert config.secrets is not None
    assert config.secrets.file == (tmp_path / "secrets.enc.json").resolve()
    assert [ref.store for _, ref in config.secret_references() if ref.store] == ["openai"]


def test_the_onprem_only_policy_is_the_default_less_its_managed_routes() -> None:
    """Only routes and sanitize steps change: the rules, their order and the detection section
    are the default policy's."""
    default = load_policy(DEFAULT_POLICY)
    dev = load_policy_text(onprem_only_policy(DEFAULT_POLICY.read_text(encoding="utf-8")))
    assert [r.id for r in dev.rules] == [r.id for r in default.rules]
    assert set(dev.routes) == {n for n, r in default.routes.items() if r.kind.value == "onprem"}
    assert dev.detection == default.detection


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + 120  # a loaded machine warms the worker up slowly
    while time.monotonic() < deadline:
        try:
            if httpx2.get(url, timeout=2).status_code == 200:
                return
        except httpx2.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"{url} not ready in 120 s")


def _serve_and_stop(args: list[str], ready_after: str) -> tuple[int, list[str]]:
    """Run ``bastion ARGS`` until the line holding ``ready_after`` names its ops port and that
    port is ready, then SIGTERM it; every line it logged."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", *args],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stderr is not None
    lines = []
    try:
        for line in process.stderr:
            lines.append(line.rstrip("\n"))
            if ready_after in line or len(lines) > 200:
                break
        ops = lines[-1].rsplit("http://", 1)[-1]
        _wait_ready(f"http://{ops}/readyz")  # both servers have started (and logged it)
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    return process.returncode, lines + rest.splitlines()


def _assert_each_line_once(lines: list[str], started: str, stopped: int) -> None:
    # The message after the timestamp and level: "2026-... INFO uvicorn.error: Started ..."
    messages = [line.split(" ", 2)[-1] for line in lines if line.strip()]
    repeated = sorted({m for m in messages if messages.count(m) > 1})
    assert repeated == [], "\n".join(lines)
    assert sum(started in m for m in messages) == 1, "\n".join(lines)
    assert sum(m.endswith(" stopped") for m in messages) == stopped, "\n".join(lines)


def test_gateway_logs_its_start_and_stop_lines_once(tmp_path: Path, test_pki: TestPKI) -> None:
    """`bastion serve` (API and ops listeners): no log line is written twice, and it says
    once where it listens and once that it stopped."""
    config = {
        "server": {"host": "127.0.0.1", "port": 0, "ops_port": 0},
        "tls": {
            "cert": str(test_pki.server.cert),
            "key": str(test_pki.server.key),
            "ca": str(test_pki.ca_cert),
        },
        "upstreams": {"worker": {"kind": "onprem", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {"chat-default": {"upstream": "worker"}},
        "authorization": [{"identity": "spiffe://bastion.internal/svc/*", "models": ["*"]}],
    }
    path = tmp_path / "gateway.yaml"
    with path.open("w") as handle:
        YAML().dump(config, handle)
    code, lines = _serve_and_stop(["serve", "--config", str(path)], "ops endpoints")
    assert code == 0, "\n".join(lines)
    _assert_each_line_once(lines, "listening on", stopped=1)


def test_worker_logs_its_start_and_stop_lines_once(tmp_path: Path, tiny_model_dir: Path) -> None:
    """`bastion worker` (API and ops listeners, as `make run` starts it): no log line twice."""
    ops_port = _free_port()
    config = {
        "model": {"source": "dir", "path": str(tiny_model_dir), "name": "tiny"},
        "runtime": {"device": "cpu"},
        "warmup": {"prompt_tokens": 8, "decode_steps": 2},
        "server": {"host": "127.0.0.1", "port": 0, "insecure_plain_http": True},
    }
    path = tmp_path / "worker.yaml"
    with path.open("w") as handle:
        YAML().dump(config, handle)
    _, lines = _serve_and_stop(
        ["worker", "--config", str(path), "--ops-port", str(ops_port)], "worker listening on"
    )
    # uvicorn re-raises SIGTERM once the worker's servers are down, so it logs no stop line.
    _assert_each_line_once(lines, "worker listening on", stopped=0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
