"""Helpers for the air-gap suites: a network namespace with loopback only, a gateway config for
it, and the commands that run inside it (recording upstreams, a client over mTLS).

A namespace is held open by a ``sleep`` started with ``unshare -n``; commands join it with
``nsenter --net``. Its loopback is its own, so fixed ports never collide with anything on the
host, and there is no route anywhere else: an attempt to reach the internet fails (and strace
still records the connect()).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests.fixtures.pki import CertPair, TestPKI

REPO = Path(__file__).resolve().parents[2]
ONPREM_PORT = 18600
MANAGED_PORT = 18700
GATEWAY_PORT = 18443
OPS_PORT = 19464


def need_root_tools(*tools: str) -> None:
    """Skip (with the reason) where the namespace tools or root are missing."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (unshare -n); CI runs as root")
    for tool in ("unshare", "nsenter", "ip", *tools):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make install installs iproute2 and strace)")


class NetNS:
    """A network namespace with only loopback, up."""

    def __init__(self) -> None:
        self._holder = subprocess.Popen(["unshare", "-n", "sleep", "900"])
        self.path = f"/proc/{self._holder.pid}/ns/net"
        deadline = time.monotonic() + 10
        while os.readlink(self.path) == os.readlink("/proc/self/ns/net"):
            if time.monotonic() > deadline:
                raise RuntimeError("unshare -n did not create a network namespace")
            time.sleep(0.02)
        subprocess.run(self.prefix(["ip", "link", "set", "lo", "up"]), check=True)

    def prefix(self, argv: Sequence[str]) -> list[str]:
        return ["nsenter", f"--net={self.path}", *argv]

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.prefix(argv), capture_output=True, text=True, check=False, **kwargs
        )

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(self.prefix(argv), text=True, **kwargs)

    def close(self) -> None:
        self._holder.terminate()
        self._holder.wait(10)


@contextlib.contextmanager
def netns() -> Iterator[NetNS]:
    ns = NetNS()
    try:
        yield ns
    finally:
        ns.close()


def stop(process: subprocess.Popen[str]) -> str:
    """Stop a process started by a test (SIGTERM, then SIGKILL) and return its output."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    out = process.stdout.read() if process.stdout else ""
    return out


def write_gateway_config(
    directory: Path, pki: TestPKI, policy: Path, *, signing_key: Path | None = None
) -> Path:
    """A gateway config for the namespace: mTLS on GATEWAY_PORT, the policy's two upstreams
    (``worker`` on-prem, ``openai`` managed) on loopback, a SQLite audit trail."""
    directory.mkdir(parents=True, exist_ok=True)
    digest = directory / "digest.key"
    digest.write_text("airgap-test-digest-key-0123456789abcdef0123456789\n")
    digest.chmod(0o600)
    config = {
        "server": {"host": "127.0.0.1", "port": GATEWAY_PORT, "ops_port": OPS_PORT},
        "tls": {
            "cert": str(pki.server.cert),
            "key": str(pki.server.key),
            "ca": str(pki.ca_cert),
            "crl": str(pki.crl),
        },
        "upstreams": {
            "worker": {
                "kind": "onprem",
                "base_url": f"http://127.0.0.1:{ONPREM_PORT}/v1",
                "model_map": {"chat-default": "onprem-model"},
                "timeout": {"connect": 3, "read": 20},
            },
            "openai": {
                "kind": "managed",
                "base_url": f"http://127.0.0.1:{MANAGED_PORT}/v1",
                "model_map": {"chat-default": "managed-model"},
                "timeout": {"connect": 3, "read": 20},
            },
        },
        "models": {"chat-default": {"upstream": "worker"}},
        "authorization": [{"identity": "spiffe://bastion.internal/svc/*", "models": ["*"]}],
        "policy": {"file": str(policy)},
        "audit": {
            "backend": "sqlite",
            "path": str(directory / "audit" / "bastion.db"),
            "digest_key_file": str(digest),
        },
        "signing": {"key_file": str(signing_key or directory / "audit" / "signing.key")},
    }
    (directory / "audit").mkdir(exist_ok=True)
    path = directory / "gateway.yaml"
    with path.open("w") as handle:
        YAML().dump(config, handle)
    return path


def start_upstreams(ns: NetNS) -> subprocess.Popen[str]:
    """The two recording upstreams (on-prem and managed) inside the namespace."""
    process = ns.popen(
        [sys.executable, "-m", "tests.airgap._upstreams", str(ONPREM_PORT), str(MANAGED_PORT)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if "ready" not in line:
        raise RuntimeError(f"recording upstreams did not start: {line}{stop(process)}")
    return process


def call_routes(ns: NetNS, client: CertPair, ca: Path) -> dict[str, Any]:
    """Run ``tests.airgap._client`` in the namespace: one request per route; its JSON result."""
    result = ns.run(
        [
            *(sys.executable, "-m", "tests.airgap._client"),
            *(f"https://127.0.0.1:{GATEWAY_PORT}", f"http://127.0.0.1:{OPS_PORT}"),
            *(str(ca), str(client.cert), str(client.key)),
        ],
        cwd=REPO,
        timeout=240,
    )
    if result.returncode != 0:
        raise AssertionError(f"client failed ({result.returncode}):\n{result.stderr[-3000:]}")
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def stop_traced(process: subprocess.Popen[str]) -> str:
    """Stop a command run under ``strace -f``: SIGTERM its traced children (strace then exits
    with them) and return the output."""
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
    if process.poll() is None and children.exists():
        for pid in children.read_text().split():
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.kill(int(pid), signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):  # stop() below kills it
            process.wait(30)
    return stop(process)


_INET = re.compile(r'sa_family=AF_INET, sin_port=htons\((\d+)\), sin_addr=inet_addr\("([^"]+)"\)')
_INET6 = re.compile(
    r'sa_family=AF_INET6, sin6_port=htons\((\d+)\).*?inet_pton\(AF_INET6, "([^"]+)"'
)
_UNIX = re.compile(r'sa_family=AF_UNIX, sun_path=(@?"[^"]*")')
_FAMILY = re.compile(r"sa_family=(\w+)")


def connect_addresses(trace: str) -> list[str]:
    """Every address a ``strace -e trace=connect`` log shows, in order of first appearance:
    ``host:port`` for IPv4/IPv6, ``unix:PATH`` for Unix sockets, the family name otherwise."""
    seen: dict[str, None] = {}
    for line in trace.splitlines():
        if "connect(" not in line:
            continue
        if match := _INET.search(line):
            seen[f"{match.group(2)}:{match.group(1)}"] = None
        elif match := _INET6.search(line):
            seen[f"[{match.group(2)}]:{match.group(1)}"] = None
        elif match := _UNIX.search(line):
            seen[f"unix:{match.group(1)}"] = None
        elif match := _FAMILY.search(line):
            seen[match.group(1)] = None
    return list(seen)
