"""The circuit breaker of one upstream target.

What feeds it is decided in one place, ``_pool._Lease``: a 5xx, a timeout, a broken connection
or an unusable 2xx answer is a failure; a 2xx answer read whole is a success, and so is a 4xx (the
upstream is up and judged the request; if a 4xx counted as a failure, one caller sending bad
requests could open the circuit for every caller); a 429, a cancelled call or a caller gone
mid-stream gives no verdict (a half-open trial slot is freed for the next call).
"""

from __future__ import annotations

import time
from enum import StrEnum

from gateway.errors import ServiceUnavailable

__all__ = ["CircuitBreaker", "CircuitState"]


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Opens after ``threshold`` consecutive failures; after ``reset_after`` seconds lets one
    trial through (half-open); a success closes it, a failure opens it again, and a trial that
    ends without a verdict (the caller went away) lets the next one through."""

    def __init__(self, name: str, *, threshold: int, reset_after: float) -> None:
        self.name = name
        self._threshold = threshold
        self._reset_after = reset_after
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        if time.monotonic() - self._opened_at >= self._reset_after:
            return CircuitState.HALF_OPEN
        return CircuitState.OPEN

    def before_call(self) -> None:
        """Let the call through, or raise 503 ``upstream_circuit_open``."""
        state = self.state
        if state is CircuitState.CLOSED:
            return
        if state is CircuitState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return
        remaining = self._reset_after - (time.monotonic() - (self._opened_at or 0.0))
        raise ServiceUnavailable(
            f"upstream '{self.name}' is failing; its circuit is open for another "
            f"{max(remaining, 0):.0f} s",
            code="upstream_circuit_open",
            retry_after=max(remaining, 1.0),
        )

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False

    def failure(self) -> None:
        self._failures += 1
        self._trial_in_flight = False
        if self._opened_at is not None or self._failures >= self._threshold:
            self._opened_at = time.monotonic()

    def release(self) -> None:
        """The call ended without a verdict on the upstream's health (cancelled, or a 429)."""
        self._trial_in_flight = False
