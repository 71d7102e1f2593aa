"""Helpers shared by the upstream adapter tests: configs, the request sent, what an error may say."""

from __future__ import annotations

import re
from typing import Any

from gateway.config import UpstreamConfig
from gateway.errors import GatewayError
from gateway.upstreams import OpenAIUpstream

# What the caller sent. The bad upstream echoes it into its error bodies, HTML and events, so a
# test can prove none of it reaches Bastion's own error messages.
PROMPT = "PROMPT-078-05-1120 Jane Roe lives at 12 Elm Street"
CHAT: dict[str, Any] = {
    "model": "upstream-model",
    "messages": [{"role": "user", "content": PROMPT}],
}
STREAM_CHAT: dict[str, Any] = {**CHAT, "stream": True}


def config(url: str | list[str], **overrides: Any) -> UpstreamConfig:
    """An on-prem upstream config with short timeouts; ``overrides`` merge into it."""
    raw: dict[str, Any] = {
        "kind": "onprem",
        "base_url": url,
        "timeout": {"connect": 2.0, "read": 5.0, "write": 5.0, "pool": 2.0, "total": 30.0},
        "circuit": {"failure_threshold": 1, "reset_after_s": 60.0},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return UpstreamConfig.model_validate(raw)


def openai(url: str | list[str], **overrides: Any) -> OpenAIUpstream:
    return OpenAIUpstream("bad-worker", config(url, **overrides), None)


def assert_no_leak(exc: BaseException) -> None:
    """The error names the upstream, never what was sent, the URL, or the cause's text."""
    assert isinstance(exc, GatewayError)
    for text in (str(exc), exc.message):
        assert "PROMPT" not in text
        assert "078-05-1120" not in text
        assert "Jane" not in text
        assert "127.0.0.1" not in text
        assert "http://" not in text
        assert "'bad-worker'" in text or "bad-worker" in text
    assert exc.__cause__ is None
    assert exc.__suppress_context__ or exc.__context__ is None


def rss_peak_reset() -> int:
    """Reset the process's peak RSS (VmHWM) and return the current RSS, in bytes."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    return _status_kib("VmRSS") * 1024


def rss_peak() -> int:
    return _status_kib("VmHWM") * 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        match = re.search(rf"^{field}:\s+(\d+) kB", handle.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"/proc/self/status has no {field}")
    return int(match.group(1))
