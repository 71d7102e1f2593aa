"""Runtime stays offline: the gateway connects to its configured upstreams and nothing else.

The gateway runs under ``strace -f -e trace=connect`` in a network namespace with loopback only,
with an empty HOME (no warm caches to hide a download) and no ``*_OFFLINE`` variables, and takes
one request on each route (managed, on-prem, deny, streaming), each API endpoint and each ops
endpoint. Every connect() it made is listed; only the two configured upstream addresses may
appear: no DNS, no model hub, no public-suffix list, no telemetry.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.airgap._support import (
    MANAGED_PORT,
    ONPREM_PORT,
    REPO,
    call_routes,
    connect_addresses,
    need_root_tools,
    netns,
    start_upstreams,
    stop,
    stop_traced,
    write_gateway_config,
)
from tests.fixtures.pki import TestPKI

CONFIGURED = {f"127.0.0.1:{ONPREM_PORT}", f"127.0.0.1:{MANAGED_PORT}"}
# glibc asks the local name-service cache daemon first for passwd lookups (torch's import calls
# getpass.getuser() when spaCy/thinc imports it). A Unix socket on this host, not the network:
# with no nscd running, a host-name lookup would go on to DNS and show up as an IP address.
LOCAL_NSS = 'unix:"/var/run/nscd/socket"'
# The detection pool's forkserver (multiprocessing) listens on a Unix socket in a private temp
# directory of its own (pymp-*/listener-*): the gateway talking to its own worker processes.
FORKSERVER = re.compile(r'^unix:"[^"]*/pymp-[^/"]+/listener-[^/"]+"$')


@pytest.mark.parametrize(
    ("trace", "expected"),
    [
        (
            '12 connect(7, {sa_family=AF_INET, sin_port=htons(18600), sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
            ["127.0.0.1:18600"],
        ),
        (
            '12 connect(7, {sa_family=AF_INET6, sin6_port=htons(53), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, "::1", &sin6_addr), sin6_scope_id=0}, 28) = -1 ENETUNREACH',
            ["[::1]:53"],
        ),
        (
            '12 connect(3, {sa_family=AF_UNIX, sun_path="/var/run/nscd/socket"}, 110) = -1 ENOENT',
            ['unix:"/var/run/nscd/socket"'],
        ),
        (
            "12 connect(3, {sa_family=AF_NETLINK, nl_pid=0, nl_groups=00000000}, 12) = 0",
            ["AF_NETLINK"],
        ),
        ("12 +++ exited with 0 +++", []),
    ],
    ids=["ipv4", "ipv6", "unix", "other-family", "no-connect"],
)
def test_connect_addresses_parses_each_family(trace: str, expected: list[str]) -> None:
    """Each address family strace prints is turned into one comparable address string."""
    assert connect_addresses(trace) == expected


@pytest.mark.slow
def test_gateway_connects_only_to_configured_upstreams(test_pki: TestPKI, tmp_path: Path) -> None:
    """Through a request on every route and endpoint, the only connect() addresses are the two
    configured upstreams."""
    need_root_tools("strace")
    config = write_gateway_config(tmp_path / "site", test_pki, REPO / "policies" / "default.yaml")
    client = test_pki.client("svc/egress")
    trace = tmp_path / "connect.trace"
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8"}
    with netns() as ns:
        upstreams = start_upstreams(ns)
        gateway = ns.popen(
            [
                *("strace", "-f", "-qq", "-e", "trace=connect", "-o", str(trace)),
                *(sys.executable, "-m", "gateway", "serve", "--config", str(config)),
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            results = call_routes(ns, client, test_pki.ca_cert)
        finally:
            log = stop_traced(gateway)
            stop(upstreams)
    addresses = connect_addresses(trace.read_text())
    print(f"\nconnect() addresses seen from the gateway: {addresses}")
    assert {k: v["status"] for k, v in results.items()} == {
        "ops/healthz": 200,
        "ops/readyz": 200,
        "ops/metrics": 200,
        "models": 200,
        "managed-clean": 200,
        "onprem-ssn": 200,
        "deny-secret": 403,
        "managed-stream": 200,
        "completions": 200,
    }, log[-3000:]
    assert results["onprem-ssn"]["route"] == "onprem"
    assert results["managed-clean"]["route"] == "openai"
    local = {a for a in addresses if a == LOCAL_NSS or FORKSERVER.match(a)}
    assert set(addresses) - local == CONFIGURED, f"unexpected egress: {addresses}"
