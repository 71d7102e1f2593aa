"""``python -m tests.airgap._client API_URL OPS_URL CA CERT KEY``: wait for the gateway, send one
request per route and endpoint, print a JSON summary ({case: {status, route, text}})."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx2

from pki.tls import client_context

# case -> (method, path, body); the prompts choose the policy's routes (policies/default.yaml).
CASES: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "models": ("GET", "/v1/models", None),
    "managed-clean": (
        "POST",
        "/v1/chat/completions",
        {
            "model": "chat-default",
            "messages": [{"role": "user", "content": "Say hello in French."}],
        },
    ),
    "onprem-ssn": (
        "POST",
        "/v1/chat/completions",
        {
            "model": "chat-default",
            "messages": [{"role": "user", "content": "My SSN is 078-05-1120. What is it for?"}],
        },
    ),
    "deny-secret": (
        "POST",
        "/v1/chat/completions",
        {
            "model": "chat-default",
            "messages": [{"role": "user", "content": "key AKIAIOSFODNN7EXAMPLE is it valid?"}],
        },
    ),
    "managed-stream": (
        "POST",
        "/v1/chat/completions",
        {
            "model": "chat-default",
            "stream": True,
            "messages": [{"role": "user", "content": "Count to five."}],
        },
    ),
    "completions": (
        "POST",
        "/v1/completions",
        {"model": "chat-default", "prompt": "Write a haiku about the sea."},
    ),
}
OPS = ("/healthz", "/readyz", "/metrics")


def _wait(ops: str, deadline_s: float = 180) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if httpx2.get(f"{ops}/readyz", timeout=2).status_code == 200:
                return
        except httpx2.HTTPError:
            pass  # not listening yet
        time.sleep(0.5)
    raise SystemExit(f"gateway not ready at {ops} after {deadline_s:.0f} s")


def main(api: str, ops: str, ca: str, cert: str, key: str) -> int:
    _wait(ops)
    out: dict[str, Any] = {}
    for path in OPS:
        out[f"ops{path}"] = {"status": httpx2.get(f"{ops}{path}", timeout=10).status_code}
    context = client_context(ca=Path(ca), cert=Path(cert), key=Path(key))
    with httpx2.Client(base_url=api, verify=context, timeout=60) as client:
        for case, (method, path, body) in CASES.items():
            response = client.request(method, path, json=body)
            out[case] = {
                "status": response.status_code,
                "route": response.headers.get("x-bastion-route"),
                "text": response.text[:2000],
            }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
