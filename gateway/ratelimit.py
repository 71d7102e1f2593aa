"""Per-identity limits: requests per minute and tokens per minute, token buckets in memory.

Rules come from config (``rate_limits:``), matched in order against the caller's SPIFFE ID
(globs, the policy's meaning: ``*`` stops at ``/``, see :func:`gateway.policy.glob_match`);
the first matching rule applies, with one bucket per identity. Tokens are estimated
at admission (prompt characters / 4 plus ``max_tokens``, or 256 when absent), before detection
runs, so a flood costs little. Limits are per gateway replica: with N replicas behind a load
balancer the effective limit is up to N times the configured one (documented trade-off;
a shared store would add a network round trip to every request).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.config import RateLimitRule
from gateway.errors import RateLimited
from gateway.policy import glob_match

__all__ = ["RateLimiter", "estimate_tokens"]

DEFAULT_COMPLETION_TOKENS = 256


def estimate_tokens(text_chars: int, max_tokens: int | None) -> int:
    return text_chars // 4 + (max_tokens or DEFAULT_COMPLETION_TOKENS)


@dataclass
class _Bucket:
    capacity: float
    level: float
    updated: float

    def take(self, amount: float, now: float) -> float:
        """Take ``amount``; return 0 on success, else seconds until it would fit."""
        rate = self.capacity / 60.0
        self.level = min(self.capacity, self.level + (now - self.updated) * rate)
        self.updated = now
        if amount > self.capacity:
            return float("inf")
        if self.level >= amount:
            self.level -= amount
            return 0.0
        return (amount - self.level) / rate


class RateLimiter:
    def __init__(self, rules: Sequence[RateLimitRule]) -> None:
        self._rules = tuple(rules)
        self._buckets: dict[tuple[int, str, str], _Bucket] = {}
        self._lock = threading.Lock()

    def _bucket(self, index: int, identity: str, kind: str, capacity: int, now: float) -> _Bucket:
        key = (index, identity, kind)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(capacity), float(capacity), now)
        return bucket

    def check(self, identity: str, tokens: int) -> None:
        """Admit one request of ``tokens`` estimated tokens, or raise :class:`RateLimited`."""
        for index, rule in enumerate(self._rules):
            if glob_match(identity, (rule.identity,)) is None:
                continue
            now = time.monotonic()
            with self._lock:
                waits: list[tuple[float, str]] = []
                if rule.requests_per_minute is not None:
                    bucket = self._bucket(
                        index, identity, "requests", rule.requests_per_minute, now
                    )
                    waits.append((bucket.take(1, now), f"{rule.requests_per_minute} requests/min"))
                    if waits[-1][0] > 0:
                        raise _limited(identity, waits[-1])
                if rule.tokens_per_minute is not None:
                    bucket = self._bucket(index, identity, "tokens", rule.tokens_per_minute, now)
                    wait = bucket.take(tokens, now)
                    if wait > 0:
                        if rule.requests_per_minute is not None:  # give the request slot back
                            self._buckets[(index, identity, "requests")].level += 1
                        raise _limited(identity, (wait, f"{rule.tokens_per_minute} tokens/min"))
            return


def _limited(identity: str, wait: tuple[float, str]) -> RateLimited:
    seconds, limit = wait
    if seconds == float("inf"):
        return RateLimited(
            f"this request alone exceeds the limit of {limit} for {identity}; lower max_tokens",
            code="rate_limit_exceeded",
        )
    return RateLimited(
        f"rate limit of {limit} reached for {identity}; retry after {seconds:.0f} s",
        code="rate_limit_exceeded",
        retry_after=max(seconds, 1.0),
    )
